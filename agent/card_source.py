"""Waiting for the officer's smart card through PC/SC events, and opening its key so that a pull is seen.

``CardTokenSource`` serves the token profiles that ``[pcsc.certificates]`` in ``qsign.toml`` names::

    [pcsc]
    socket = "card/run/pcscd.comm"         # optional; pcscd's socket (PCSCLITE_CSOCK_NAME)
    [pcsc.certificates]
    card_officer = "pki/officer-card.pem"  # token profile = the certificate that marks the right card

For such a profile the wait follows ``token_drivers.card_wait`` without polling, and each event names
the reader. A card without the certificate is reported as ``wrong_token`` while the wait goes on. The
key is opened with ``open_card_key``, so a card pulled mid-signature fails with ``device_removed``.
Other profiles (SoftHSM2, USB tokens known by label) go to the fallback source, by default
``Pkcs11TokenSource``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from cryptography import x509

from qsign.config import Config, TokenProfile
from qsign.errors import ConfigError
from token_drivers.atr import load_catalog
from token_drivers.card_wait import WaitEvent, WaitEventKind, wait_for_token
from token_drivers.hotplug import open_card_key
from token_drivers.keys import TokenKey
from token_drivers.module import load_module
from token_drivers.pcsc import CardEventSource

from agent.events import EventState
from agent.token_source import Pkcs11TokenSource, PresentToken, TokenSource, WaitReporter

__all__ = ["CardTokenSource", "card_certificates", "select_token_source"]

_logger = logging.getLogger(__name__)

#: Seconds between attempts to reach pcscd again after it went away.
RECONNECT_SECONDS = 0.5


def card_certificates(config: Config) -> dict[str, Path]:
    """Return ``[pcsc.certificates]``: token profile name → certificate file; raise ``ConfigError`` if malformed."""
    table = config.section("pcsc", "certificates")
    certificates: dict[str, Path] = {}
    for profile, value in table.items():
        if not isinstance(value, str):
            raise ConfigError(detail=f"pcsc.certificates.{profile} must be a file path, not {type(value).__name__}")
        if profile not in config.tokens:
            raise ConfigError(detail=f"pcsc.certificates.{profile} is set, but [tokens.{profile}] is missing; "
                                     "add the token profile or remove the entry")
        certificates[profile] = config.resolve(value)
    return certificates


def select_token_source(config: Config, choice: str) -> TokenSource:
    """Return the token source that ``[agent] token_source`` selects.

    ``"pkcs11"`` polls the module's slot list; ``"pcsc"`` uses card events for the profiles in
    ``[pcsc.certificates]``; ``"auto"`` (the default) picks ``"pcsc"`` when that table is not empty.
    """
    certificates = card_certificates(config)
    if choice == "pkcs11" or (choice == "auto" and not certificates):
        return Pkcs11TokenSource()
    if not certificates:
        raise ConfigError(detail="agent.token_source = \"pcsc\" needs [pcsc.certificates] with the officers' "
                                 "certificate files")
    return CardTokenSource(config, certificates)


def _card_details(step: WaitEvent) -> dict[str, Any]:
    details = step.to_dict()
    details.pop("event", None)
    if step.kind is WaitEventKind.UNKNOWN_CARD:
        details["reason"] = "unknown_card"
    return details


class CardTokenSource:
    """A ``TokenSource`` driven by PC/SC events, with one monitor thread for the agent's lifetime."""

    def __init__(self, config: Config, certificates: dict[str, Path], fallback: TokenSource | None = None) -> None:
        self.certificates = certificates
        self.fallback = fallback or Pkcs11TokenSource()
        self._events = CardEventSource(load_catalog(config.raw), reconnect_interval=RECONNECT_SECONDS)
        self._started = False

    def start(self) -> None:
        """Start watching readers, once. The agent calls it at start-up, so the first wait knows the cards present."""
        if not self._started:
            self._events.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await asyncio.to_thread(self._events.stop)
            self._started = False

    def _certificate(self, profile: TokenProfile) -> x509.Certificate:
        path = self.certificates[profile.name]
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(detail=f"pcsc.certificates.{profile.name}: cannot read {path}: {error}") from None

    async def wait_for_token(self, profile: TokenProfile, timeout: float, report: WaitReporter) -> PresentToken:
        if profile.name not in self.certificates:
            return await self.fallback.wait_for_token(profile, timeout, report)

        certificate = self._certificate(profile)
        self.start()
        async for step in wait_for_token(self._events, certificate, timeout):
            if step.kind is WaitEventKind.WAITING_FOR_TOKEN:
                await report(EventState.WAITING_FOR_TOKEN, {"token": profile.token_label,
                                                            "readers": list(step.readers)})
            elif step.kind in (WaitEventKind.WRONG_TOKEN, WaitEventKind.UNKNOWN_CARD):
                _logger.info("profile %s: card in %s is not the signer's (%s)", profile.name, step.reader,
                             step.kind.value)
                await report(EventState.WRONG_TOKEN, _card_details(step))
            elif step.kind is WaitEventKind.TOKEN_PRESENT:
                return self._present(step)
        # card_wait returns only after token_present or raises token_wait_timeout.
        raise AssertionError("the card wait ended without a token")

    @staticmethod
    def _present(step: WaitEvent) -> PresentToken:
        module_path, card = step.module, step.token
        assert module_path is not None and card is not None

        async def opener(pin: str, allow_final_try: bool) -> TokenKey:
            module = await asyncio.to_thread(load_module, module_path)
            return await module.run(open_card_key, module_path, card, pin, allow_final_try)

        details = _card_details(step)
        _logger.info("signer's card found in %s (token %s)", step.reader, card.token_label)
        return PresentToken(opener, details)
