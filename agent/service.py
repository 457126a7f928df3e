"""Running the agent: open the archive and the policy, make the TLS certificate, serve, advertise, stop cleanly.

On SIGTERM or SIGINT the listening socket closes first, the zeroconf advertisement is withdrawn, and
signatures in progress get ``SHUTDOWN_GRACE`` seconds to finish. A signature that does not finish in
time is cancelled: its request becomes ``failed`` (code ``interrupted``) and its work files are removed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from archive.api import Archive
from policies import load_policy
from qsign.config import Config, apply_environment
from qsign.i18n import translate
from token_drivers.pcsc import apply_pcsc_environment
from token_drivers.relay import VpcdRelay, relay_service_info

from agent.card_relay import relay_address, start_card_relay
from agent.card_source import CardTokenSource, select_token_source
from agent.discovery import Advertisement, advertise
from agent.events import EventBus
from agent.server import API_PREFIX, create_app
from agent.settings import AgentSettings
from agent.tls import AgentCertificate, ensure_certificate, fingerprint_text, terminal_qr, write_qr_png
from agent.token_source import TokenSource
from agent.workflow import Workflow

__all__ = ["RunningAgent", "start_agent", "serve_until_signal", "SHUTDOWN_GRACE"]

_logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 30.0


@dataclass
class RunningAgent:
    runner: web.AppRunner
    workflow: Workflow
    base_url: str
    certificate: AgentCertificate | None
    advertisement: Advertisement | None
    qr_png: Path | None
    #: The phone card reader relay and its server, when ``[agent] relay_listen`` is set.
    relay: VpcdRelay | None = None
    relay_server: asyncio.Server | None = None
    relay_port: int | None = None

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop listening, withdraw the advertisement, let signatures finish, then close everything."""
        for site in list(self.runner.sites):
            await site.stop()
        if self.relay_server is not None:
            self.relay_server.close()
        if self.advertisement is not None:
            await asyncio.to_thread(self.advertisement.close)
        pending = set(self.workflow.signing_tasks)
        if pending:
            _logger.info("waiting up to %.0f s for %d signature(s) in progress", grace, len(pending))
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        await self.runner.cleanup()
        if isinstance(self.workflow.token_source, CardTokenSource):
            await self.workflow.token_source.stop()
        self.workflow.archive.close()
        _logger.info("agent stopped")


async def start_agent(config: Config, settings: AgentSettings, token_source: TokenSource | None = None) -> RunningAgent:
    """Start serving ``settings.host:port`` in the running loop; port 0 picks a free port."""
    apply_environment(config)
    apply_pcsc_environment(config)
    policy = load_policy(settings.policy_file)
    archive = Archive.open(config.state_dir, config)
    relay_server = None
    try:
        if token_source is None:
            token_source = select_token_source(config, settings.token_source)
        if isinstance(token_source, CardTokenSource):
            # Watching from the start means cards already in a reader are known to the first wait.
            token_source.start()
        _logger.info("token source: %s", type(token_source).__name__)
        workflow = Workflow(archive, policy, config, settings, EventBus(), token_source)
        recovered = workflow.recover_interrupted()
        if recovered:
            _logger.warning("%d request(s) were left in signing by a previous run and are now failed", recovered)

        certificate = None
        ssl_context: ssl.SSLContext | None = None
        if settings.use_tls or settings.relay_listen is not None:
            certificate, _ = ensure_certificate(settings.agent_dir / "tls", settings.name,
                                                [settings.host, f"{settings.name}.local"])
        if settings.use_tls:
            ssl_context = certificate.ssl_context()
        scheme = "https" if ssl_context else "http"
        info = {"api_version": "v1", "api_path": API_PREFIX, "name": settings.name, "scheme": scheme,
                "tls_fingerprint_sha256": certificate.fingerprint if certificate else None}

        runner = web.AppRunner(create_app(workflow, settings, info), access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        relay = None
        if settings.relay_listen is not None:
            relay, relay_server = await start_card_relay(archive, certificate.ssl_context(), settings.relay_listen,
                                                         settings.relay_vpcd)
    except BaseException:
        if relay_server is not None:
            relay_server.close()
        if isinstance(token_source, CardTokenSource):
            await token_source.stop()
        archive.close()
        raise
    port = runner.addresses[0][1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base_url = f"{scheme}://{host}:{port}"

    qr_png = None
    if certificate is not None:
        qr_png = settings.agent_dir / "tls" / "fingerprint-qr.png"
        write_qr_png(qr_png, _pairing_uri(base_url, certificate.fingerprint))
    advertisement = None
    if settings.advertise:
        try:
            advertisement = await asyncio.to_thread(advertise, settings.name, settings.host, port, scheme,
                                                    certificate.fingerprint if certificate else "", API_PREFIX)
        except OSError as error:
            _logger.warning("zeroconf advertisement failed on %s: %s; the agent runs without it", settings.host, error)
    relay_port = None
    if relay_server is not None:
        relay_host, relay_port = relay_address(relay_server)
        if advertisement is not None:
            try:
                info = relay_service_info(settings.name.replace(".", "-")[:50] or "qsign-agent", relay_host,
                                          relay_port, certificate.fingerprint)
                await asyncio.to_thread(advertisement.add, info)
            except OSError as error:
                _logger.warning("zeroconf advertisement of the card relay failed: %s", error)
    _logger.info("agent listening on %s", base_url)
    return RunningAgent(runner, workflow, base_url, certificate, advertisement, qr_png, relay, relay_server,
                        relay_port)


def _pairing_uri(base_url: str, fingerprint: str) -> str:
    return f"qsign-agent:{base_url}{API_PREFIX}?sha256={fingerprint}"


async def serve_until_signal(config: Config, settings: AgentSettings, language: str) -> None:
    """Run the agent until SIGTERM or SIGINT; print the base URL first, then the TLS fingerprint."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    agent = await start_agent(config, settings)
    try:
        print(agent.base_url, flush=True)
        if agent.certificate is not None:
            print(translate("TLS certificate SHA-256 fingerprint: {fingerprint}", language,
                            fingerprint=fingerprint_text(agent.certificate.fingerprint)), flush=True)
            print(translate("Fingerprint QR code: {path}", language, path=str(agent.qr_png)), flush=True)
            print(terminal_qr(_pairing_uri(agent.base_url, agent.certificate.fingerprint)), flush=True)
        if agent.relay_port is not None:
            print(translate("Card reader relay for phones (TLS): port {port}", language, port=agent.relay_port),
                  flush=True)
        await stop.wait()
        _logger.info("stop signal received")
    finally:
        await agent.stop()
