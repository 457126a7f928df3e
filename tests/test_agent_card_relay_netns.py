"""The phone path end to end: a ``qsign agent serve`` process inside the card rig's network namespace.

The agent listens on the namespace's own loopback, for its HTTP API and for its TLS relay, and its
relay forwards to the rig's vpcd there (``[agent] relay_vpcd``). The test reaches the HTTP API from
the host through a forwarder that listens on the host's 127.0.0.1 and opens its connections inside
the namespace (``netns_socket``), so no traffic leaves the machine and no interface is added. The
card bridge runs in the namespace and connects to the agent's relay with the paired device's token,
as a phone reader app would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config
from helpers.card_rig import OFFICER_READER, card_rig, empty_readers  # noqa: F401
from helpers.signing_checks import validate_pdf
from softhsm_setup.card_rig import CARDS, VPCD_BASE_PORT, RigError, netns_socket
from test_agent_cards import EventLog, approved_request, sign, write_card_state
from token_drivers.pcsc import card_absent_within

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")


def namespace_free_port(namespace: str) -> int:
    probe = netns_socket(namespace)
    try:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
    finally:
        probe.close()


def start_agent_in_namespace(state_dir: Path, namespace: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``qsign agent serve`` in ``namespace`` and return the process and its HTTP port there."""
    log = (state_dir / "agent-test.log").open("a", encoding="utf-8")
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "qsign.cli", "agent", "serve",
         "--state-dir", str(state_dir), "--listen", "127.0.0.1:0", "--verbose", "--log-json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8")
    log.close()
    first = process.stdout.readline().strip()
    if not first.startswith("http://127.0.0.1:"):
        stop_agent(process)
        raise AssertionError(f"agent did not print its URL: {first!r}\n"
                             f"{(state_dir / 'agent-test.log').read_text()[-3000:]}")
    return process, int(first.split(":")[2].split("/")[0])


def stop_agent(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(40)
    finally:
        process.stdout.close()


async def start_forwarder(namespace: str, target_port: int) -> asyncio.Server:
    """Listen on the host's 127.0.0.1 and forward each connection to 127.0.0.1:``target_port`` in ``namespace``."""
    loop = asyncio.get_running_loop()

    async def handle(client_reader, client_writer):
        upstream = netns_socket(namespace)
        upstream.setblocking(False)
        await loop.sock_connect(upstream, ("127.0.0.1", target_port))
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)

        async def pump(source, target):
            try:
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            finally:
                target.close()

        await asyncio.gather(pump(client_reader, upstream_writer), pump(upstream_reader, client_writer),
                             return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
def namespaced_agent(card_rig, softhsm_state, tmp_path):  # noqa: F811
    state_dir = copy_state(softhsm_state, tmp_path / "state")
    write_card_state(state_dir, card_rig)
    relay_port = namespace_free_port(card_rig.namespace)
    set_agent_config(state_dir, advertise=False, token_wait_seconds=20, pause_before_sign_seconds=0.0,
                     sign_attempts_per_minute=50, relay_listen=f"127.0.0.1:{relay_port}",
                     relay_vpcd=f"127.0.0.1:{VPCD_BASE_PORT}")
    process, http_port = start_agent_in_namespace(state_dir, card_rig.namespace)
    yield process, state_dir, http_port, relay_port
    stop_agent(process)


async def test_namespaced_agent_relay_signs_pdf(namespaced_agent, empty_readers, tmp_path):
    rig = empty_readers
    process, state_dir, http_port, relay_port = namespaced_agent
    forwarder = await start_forwarder(rig.namespace, http_port)
    base_url = f"http://127.0.0.1:{forwarder.sockets[0].getsockname()[1]}"
    agent_certificate = str(state_dir / "agent" / "tls" / "agent-cert.pem")
    try:
        phones = {}
        for user in ("operator-zhao", "reviewer-wang", "officer-li"):
            phones[user] = Phone(base_url)
            code = await asyncio.to_thread(AgentProcess(state_dir).pair_code, user)
            await phones[user].pair(code)
        officer = phones["officer-li"]

        # The relay rejects a truncated token and a forged secret, so no card reaches the reader.
        forged = officer.token.rsplit(".", 1)[0] + ".not-the-secret"
        for token in (phones["reviewer-wang"].token[:-1], forged):
            with pytest.raises(RigError):
                await asyncio.to_thread(rig.tap, "officer", 0, relay=(relay_port, token, agent_certificate))
        assert await asyncio.to_thread(card_absent_within, OFFICER_READER, 1.0)

        request = await approved_request(phones)
        log = EventLog(officer, request["id"])
        signing = asyncio.create_task(sign(officer, request))
        waiting = await log.wait_for("waiting_for_token")
        await asyncio.to_thread(rig.tap, "officer", 0, relay=(relay_port, officer.token, agent_certificate))
        present = await log.wait_for("token_present")
        status, body, _ = await asyncio.wait_for(signing, 60)
        await log.wait_for("signed")
        log.close()

        assert status == 200, body
        assert body["state"] == "signed"
        assert OFFICER_READER in waiting["readers"]
        assert present["reader"] == OFFICER_READER
        assert present["token"] == CARDS["officer"].common_name

        status, signed, _ = await officer.call("GET", f"/api/v1/requests/{request['id']}/signed")
        assert status == 200
        output = tmp_path / "signed.pdf"
        output.write_bytes(signed)
        (result,) = await asyncio.to_thread(validate_pdf, output, rig.state_dir)
        assert result.intact, result.pretty_print_details()
        assert result.valid, result.pretty_print_details()
        assert result.trusted, result.pretty_print_details()
        assert result.signing_cert.subject.native["common_name"] == CARDS["officer"].common_name
        assert process.poll() is None
    finally:
        forwarder.close()

    log_text = (state_dir / "agent-test.log").read_text(encoding="utf-8")
    assert "device token rejected" in log_text

