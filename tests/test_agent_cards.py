"""The agent with smart cards: a ``qsign agent serve`` process whose officer signs with the rig's virtual card.

The agent runs outside the rig's network namespace and reaches the rig's pcscd through its socket
(``PCSCLITE_CSOCK_NAME``, set by ``helpers.card_rig``), as an agent on a machine with a USB reader
would. The card tap and removal are the rig's. The phone relay is tested at the agent's level here:
the agent's vpcd on 127.0.0.1 is a recording stand-in, since the rig's vpcd lives on the namespace's
own loopback (``test_card_relay`` signs through a relay inside the namespace).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import ssl
import struct
import tomllib
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
import tomli_w
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from agent.card_source import CardTokenSource, select_token_source
from agent.settings import load_agent_settings
from agent.token_source import Pkcs11TokenSource
from qsign.config import Config, TokenProfile
from qsign.errors import ConfigError

from helpers.agent_rig import AgentProcess, Phone, copy_state, set_agent_config
from helpers.card_rig import OFFICER_READER, SECOND_READER, card_pin, card_rig, empty_readers  # noqa: F401
from helpers.signing_checks import validate_pdf
from softhsm_setup.card_rig import CARDS
from token_drivers.relay import HELLO_ACCEPTED, HELLO_REJECTED, RELAY_SERVICE_TYPE, encode_hello

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")

DEMO_PDF = Path(__file__).parent / "data" / "real" / "xiaoshan-sample.pdf"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RecordingVpcd:
    """A stand-in for vpcd on 127.0.0.1: counts connections, records bytes, replies 90 00 to each frame."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.received = bytearray()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self.port

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                header = await reader.readexactly(2)
                payload = await reader.readexactly(struct.unpack(">H", header)[0])
                self.received += header + payload
                writer.write(struct.pack(">H", 2) + b"\x90\x00")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def write_card_state(state_dir: Path, rig) -> None:
    """Make officer-li sign with the rig's officer card, trusted through the rig's test PKI."""
    path = state_dir / "qsign.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    rig_raw = tomllib.loads((rig.state_dir / "qsign.toml").read_text(encoding="utf-8"))
    profile = dict(rig_raw["tokens"]["card_officer"])
    profile["pin_file"] = str(rig.state_dir / profile["pin_file"])
    raw["tokens"]["card_officer"] = profile
    raw["trust"] = {"anchors": [str(rig.state_dir / "pki" / "root-ca.pem")],
                    "intermediates": [str(rig.state_dir / "pki" / "intermediate-ca.pem")]}
    raw["pcsc"] = {"socket": str(rig.socket_path),
                   "certificates": {"card_officer": str(rig.certificate_path(CARDS["officer"]))}}
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")

    policy = state_dir / "policy.toml"
    text = policy.read_text(encoding="utf-8")
    assert 'token_profile = "officer"' in text
    policy.write_text(text.replace('token_profile = "officer"', 'token_profile = "card_officer"', 1), encoding="utf-8")


@pytest.fixture(scope="module")
def vpcd_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(card_rig, softhsm_state, tmp_path_factory, vpcd_port):  # noqa: F811
    state_dir = copy_state(softhsm_state, tmp_path_factory.mktemp("agent-cards") / "state")
    write_card_state(state_dir, card_rig)
    relay_port = free_port()
    set_agent_config(state_dir, advertise=True, name=f"agent-cards-test-{os.getpid()}", token_wait_seconds=20, pause_before_sign_seconds=1.0,
                     sign_attempts_per_minute=50, relay_listen=f"127.0.0.1:{relay_port}",
                     relay_vpcd=f"127.0.0.1:{vpcd_port}")
    process = AgentProcess(state_dir)
    process.start()
    process.relay_port = relay_port
    yield process
    process.stop()


@pytest.fixture(scope="module")
def phones(agent):
    async def pair_all():
        phones = {}
        for user in ("operator-zhao", "reviewer-wang", "officer-li"):
            phones[user] = Phone(agent.base_url)
            await phones[user].pair(agent.pair_code(user))
        return phones

    return asyncio.run(pair_all())


async def approved_request(phones) -> dict:
    status, created = await phones["operator-zhao"].upload(DEMO_PDF.read_bytes())
    assert status == 201, created
    status, approved, _ = await phones["reviewer-wang"].call("POST", f"/api/v1/requests/{created['id']}/approve")
    assert approved["state"] == "approved", approved
    return approved


async def sign(phone: Phone, request: dict):
    return await phone.call("POST", f"/api/v1/requests/{request['id']}/sign",
                            json_body={"pin": card_pin(), "sha256": request["sha256"]})


class EventLog:
    """Reads a request's event stream in the background and lets the test wait for a state."""

    def __init__(self, phone: Phone, request_id: str) -> None:
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(phone, request_id))

    async def _read(self, phone: Phone, request_id: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{phone.base_url}/api/v1/requests/{request_id}/events",
                                   headers=phone.headers()) as response:
                async for line in response.content:
                    text = line.decode().strip()
                    if text.startswith("data: "):
                        self.events.append(json.loads(text[6:]))
                        self._changed.set()

    async def wait_for(self, state: str, after: int = 0, timeout: float = 20) -> dict:
        """Return the first event of ``state`` at index ``after`` or later."""
        async def find() -> dict:
            while True:
                for event in self.events[after:]:
                    if event["state"] == state:
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def states(self) -> list[str]:
        return [event["state"] for event in self.events]

    def close(self) -> None:
        self._task.cancel()


async def test_tap_while_waiting_signs_pdf(agent, phones, empty_readers, tmp_path):
    rig = empty_readers
    officer = phones["officer-li"]
    request = await approved_request(phones)
    log = EventLog(officer, request["id"])
    signing = asyncio.create_task(sign(officer, request))

    waiting = await log.wait_for("waiting_for_token")
    await asyncio.to_thread(rig.tap, "officer", 0)
    present = await log.wait_for("token_present")
    status, body, _ = await asyncio.wait_for(signing, 60)
    await log.wait_for("signed")
    log.close()

    assert status == 200, body
    assert body["state"] == "signed"
    assert OFFICER_READER in waiting["readers"]
    assert present["reader"] == OFFICER_READER
    assert present["token"] == CARDS["officer"].common_name
    assert log.states().index("token_present") < log.states().index("signing") < log.states().index("signed")

    status, signed, _ = await officer.call("GET", f"/api/v1/requests/{request['id']}/signed")
    assert status == 200
    output = tmp_path / "signed.pdf"
    output.write_bytes(signed)
    (result,) = await asyncio.to_thread(validate_pdf, output, rig.state_dir)
    assert result.intact, result.pretty_print_details()
    assert result.valid, result.pretty_print_details()
    assert result.trusted, result.pretty_print_details()
    assert result.signing_cert.subject.native["common_name"] == CARDS["officer"].common_name


async def test_pulled_card_then_tap_signs(agent, phones, empty_readers):
    rig = empty_readers
    officer = phones["officer-li"]
    request = await approved_request(phones)
    log = EventLog(officer, request["id"])
    signing = asyncio.create_task(sign(officer, request))

    await log.wait_for("waiting_for_token")
    await asyncio.to_thread(rig.tap, "officer", 0)
    await log.wait_for("signing")
    # The agent pauses pause_before_sign_seconds after "signing"; the card leaves during that pause.
    await asyncio.to_thread(rig.remove, 0)
    status, body, _ = await asyncio.wait_for(signing, 60)
    failed = await log.wait_for("failed")

    assert status == 409, body
    assert body["code"] == "device_removed"
    assert failed["code"] == "device_removed"

    # The same agent process signs after the next tap.
    resumed_at = len(log.events)
    signing = asyncio.create_task(sign(officer, request))
    await log.wait_for("waiting_for_token", after=resumed_at)
    await asyncio.to_thread(rig.tap, "officer", 0)
    status, body, _ = await asyncio.wait_for(signing, 60)
    log.close()

    assert status == 200, body
    assert body["state"] == "signed"
    assert agent.process.poll() is None


async def test_wrong_card_reported_wait_continues(agent, phones, empty_readers):
    rig = empty_readers
    officer = phones["officer-li"]
    request = await approved_request(phones)
    log = EventLog(officer, request["id"])
    signing = asyncio.create_task(sign(officer, request))

    await log.wait_for("waiting_for_token")
    await asyncio.to_thread(rig.tap, "other", 1)
    wrong = await log.wait_for("wrong_token")
    await asyncio.to_thread(rig.tap, "officer", 0)
    present = await log.wait_for("token_present")
    status, body, _ = await asyncio.wait_for(signing, 60)
    log.close()

    assert wrong["reader"] == SECOND_READER
    assert wrong["token"] == CARDS["other"].common_name
    assert present["reader"] == OFFICER_READER
    assert status == 200, body
    assert log.states().index("wrong_token") < log.states().index("token_present")


async def test_relay_rejects_invalid_device_token(agent, phones, vpcd_port):
    vpcd = RecordingVpcd(vpcd_port)
    await vpcd.start()
    context = ssl.create_default_context(cafile=str(agent.state_dir / "agent" / "tls" / "agent-cert.pem"))
    context.check_hostname = False

    async def hello(token: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.relay_port, ssl=context)
        # A VERIFY APDU right behind the hello must not reach vpcd unless the token is accepted.
        writer.write(struct.pack(">H", len(encode_hello(token))) + encode_hello(token)
                     + struct.pack(">H", 13) + bytes.fromhex("0020000008") + b"24681357")
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(2), 10)
        reply = await reader.readexactly(struct.unpack(">H", header)[0])
        writer.close()
        return reply

    officer = phones["officer-li"]
    forged = officer.token.rsplit(".", 1)[0] + ".not-the-secret"
    refused = [await hello(token) for token in ("", "qs1.nodevice.secret", forged)]
    assert refused == [HELLO_REJECTED] * 3
    assert vpcd.connections == 0
    assert vpcd.received == b""

    accepted = await hello(officer.token)
    await asyncio.sleep(0.2)
    vpcd.server.close()
    assert accepted == HELLO_ACCEPTED
    assert vpcd.connections == 1


def test_relay_is_advertised_by_zeroconf(agent):
    class Names(ServiceListener):
        def __init__(self) -> None:
            self.names: set[str] = set()

        def add_service(self, zc, type_, name) -> None:
            self.names.add(name)

        def update_service(self, zc, type_, name) -> None:
            self.names.add(name)

        def remove_service(self, zc, type_, name) -> None:
            self.names.discard(name)

    zeroconf = Zeroconf(interfaces=["127.0.0.1"])
    listener = Names()
    browser = ServiceBrowser(zeroconf, RELAY_SERVICE_TYPE, listener)
    try:
        wanted = f"agent-cards-test-{os.getpid()}.{RELAY_SERVICE_TYPE}"
        deadline = time.monotonic() + 6
        while wanted not in listener.names and time.monotonic() < deadline:
            time.sleep(0.1)
        info = zeroconf.get_service_info(RELAY_SERVICE_TYPE, wanted, timeout=3000)
    finally:
        browser.cancel()
        zeroconf.close()

    assert wanted in listener.names
    assert info is not None
    assert info.port == agent.relay_port
    certificate = x509.load_pem_x509_certificate((agent.state_dir / "agent" / "tls" / "agent-cert.pem").read_bytes())
    assert info.properties[b"fp"].decode() == certificate.fingerprint(hashes.SHA256()).hex()


# ----- configuration, without the rig


def _config(tmp_path: Path, raw: dict) -> Config:
    tokens = {"card_officer": TokenProfile("card_officer", "/usr/lib/opensc-pkcs11.so", "赵敏", "CAC ID Certificate")}
    return Config(state_dir=tmp_path, path=tmp_path / "qsign.toml", raw=raw, tokens=tokens)


def test_token_source_defaults_to_pkcs11(tmp_path):
    assert isinstance(select_token_source(_config(tmp_path, {}), "auto"), Pkcs11TokenSource)
    assert isinstance(select_token_source(_config(tmp_path, {"pcsc": {"socket": "x"}}), "auto"), Pkcs11TokenSource)


def test_token_source_pcsc_when_certificates_set(tmp_path):
    raw = {"pcsc": {"certificates": {"card_officer": "pki/card.pem"}}}
    source = select_token_source(_config(tmp_path, raw), "auto")
    assert isinstance(source, CardTokenSource)
    assert source.certificates == {"card_officer": tmp_path / "pki" / "card.pem"}
    assert isinstance(select_token_source(_config(tmp_path, raw), "pkcs11"), Pkcs11TokenSource)


@pytest.mark.parametrize(("raw", "choice", "expected"), [
    ({}, "pcsc", "needs [pcsc.certificates]"),
    ({"pcsc": {"certificates": {"nobody": "pki/card.pem"}}}, "auto", "[tokens.nobody] is missing"),
    ({"pcsc": {"certificates": {"card_officer": 7}}}, "auto", "must be a file path"),
])
def test_token_source_config_errors(tmp_path, raw, choice, expected):
    with pytest.raises(ConfigError) as raised:
        select_token_source(_config(tmp_path, raw), choice)
    assert expected in raised.value.message("en")


def test_relay_settings(tmp_path):
    config = Config(state_dir=tmp_path, path=tmp_path / "qsign.toml",
                    raw={"agent": {"relay_listen": "0.0.0.0:8732", "token_source": "pcsc"}})
    settings = load_agent_settings(config)
    assert settings.relay_listen == ("0.0.0.0", 8732)
    assert settings.relay_vpcd == ("127.0.0.1", 35963)
    assert settings.token_source == "pcsc"
    assert load_agent_settings(Config(state_dir=tmp_path, path=tmp_path / "x", raw={})).relay_listen is None
    for bad in ({"token_source": "usb"}, {"relay_listen": "8732"}, {"relay_vpcd": 35963}):
        with pytest.raises(ConfigError):
            load_agent_settings(Config(state_dir=tmp_path, path=tmp_path / "x", raw={"agent": bad}))
