"""The vpcd relay for phone readers: TLS, device-token authentication, and no PIN on the client's wire.

The first tests use a recording stand-in for vpcd on 127.0.0.1 and need no root. The last ones run
the relay inside the card rig's network namespace, connect the virtual card through it, sign, and
inspect the bytes captured on both legs.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import ipaddress
import ssl
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers.card_rig import (OFFICER_READER, card_certificate, card_pin, card_rig, empty_readers,  # noqa: F401
                              new_source)
from softhsm_setup.card_rig import VPCD_BASE_PORT, RigError, netns_socket
from token_drivers.card_wait import WaitEventKind, wait_for_token
from token_drivers.hotplug import open_card_key
from token_drivers.relay import HELLO_ACCEPTED, HELLO_REJECTED, VpcdRelay, encode_hello

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")

DEVICE_TOKEN = "paired-device-token-0123456789"


def authenticate(token: str) -> bool:
    return hmac.compare_digest(token.encode(), DEVICE_TOKEN.encode())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as the agent makes at first start."""
    directory = tmp_path_factory.mktemp("relay-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qsign agent relay")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    certificate_path = directory / "relay.pem"
    key_path = directory / "relay.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path


def server_context(tls_files) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


def client_context(tls_files) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


class RecordingVpcd:
    """A stand-in for vpcd on 127.0.0.1 that records connections and bytes and replies 90 00 to each frame."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                header = await reader.readexactly(2)
                payload = await reader.readexactly(struct.unpack(">H", header)[0])
                self.received += header + payload
                writer.write(frame(b"\x90\x00"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()


async def start_relay(tls_files, vpcd_port: int, **options) -> tuple[VpcdRelay, asyncio.Server, int]:
    relay = VpcdRelay(authenticate, server_context(tls_files), upstream_port=vpcd_port, **options)
    server = await relay.start("127.0.0.1", 0)
    return relay, server, server.sockets[0].getsockname()[1]


async def read_reply(reader) -> bytes:
    header = await reader.readexactly(2)
    return await reader.readexactly(struct.unpack(">H", header)[0])


async def test_relay_rejects_wrong_token_and_forwards_nothing(tls_files):
    vpcd = RecordingVpcd()
    relay, server, port = await start_relay(tls_files, await vpcd.start())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(tls_files))

    # A VERIFY APDU right behind the hello must not reach vpcd when the hello fails.
    writer.write(frame(encode_hello("stolen-or-guessed")) + frame(bytes.fromhex("0020000008") + b"24681357"))
    await writer.drain()
    reply = await read_reply(reader)
    closed = await reader.read()
    writer.close()
    server.close()

    assert reply == HELLO_REJECTED
    assert closed == b""
    assert vpcd.connections == 0
    assert vpcd.received == b""
    assert relay.stats.rejected == 1
    assert relay.stats.upstream_connections == 0


async def test_relay_rejects_frames_without_hello(tls_files):
    vpcd = RecordingVpcd()
    relay, server, port = await start_relay(tls_files, await vpcd.start())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(tls_files))

    writer.write(frame(b"\x04") + frame(bytes.fromhex("00A4040007A0000000790100")))
    await writer.drain()
    reply = await read_reply(reader)
    writer.close()
    server.close()

    assert reply == HELLO_REJECTED
    assert vpcd.connections == 0
    assert relay.stats.upstream_connections == 0


async def test_relay_drops_silent_and_plain_clients(tls_files):
    vpcd = RecordingVpcd()
    relay, server, port = await start_relay(tls_files, await vpcd.start(), hello_timeout=0.3)

    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(tls_files))
    silent_closed = await asyncio.wait_for(silent_reader.read(), 5)
    silent_writer.close()

    plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", port)
    plain_writer.write(frame(encode_hello(DEVICE_TOKEN)))
    await plain_writer.drain()
    plain_reply = await asyncio.wait_for(plain_reader.read(), 5)
    plain_writer.close()
    server.close()

    assert silent_closed == b""
    assert HELLO_ACCEPTED not in plain_reply
    assert vpcd.connections == 0
    # The plain client fails the TLS handshake, before the relay's handler runs; only the silent one counts.
    assert relay.stats.rejected == 1
    assert relay.stats.upstream_connections == 0


async def test_relay_forwards_after_async_authentication(tls_files):
    vpcd = RecordingVpcd()
    checked = []

    async def authenticate_async(token: str) -> bool:
        checked.append(token)
        return authenticate(token)

    relay = VpcdRelay(authenticate_async, server_context(tls_files), upstream_port=await vpcd.start())
    server = await relay.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(tls_files))

    writer.write(frame(encode_hello(DEVICE_TOKEN)))
    await writer.drain()
    accepted = await read_reply(reader)
    command = bytes.fromhex("00A4040007A0000000790100")
    writer.write(frame(command))
    await writer.drain()
    response = await read_reply(reader)
    writer.close()
    server.close()

    assert checked == [DEVICE_TOKEN]
    assert accepted == HELLO_ACCEPTED
    assert response == b"\x90\x00"
    assert vpcd.connections == 1
    assert bytes(vpcd.received) == frame(command)


# ----- through the real rig


async def start_capture_proxy(namespace: str, target_port: int, captured: bytearray) -> tuple[asyncio.Server, int]:
    """Forward TCP connections inside ``namespace`` to ``target_port`` and record every byte both ways."""
    loop = asyncio.get_running_loop()

    async def handle(client_reader, client_writer):
        upstream = netns_socket(namespace)
        upstream.setblocking(False)
        await loop.sock_connect(upstream, ("127.0.0.1", target_port))
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)

        async def pump(source, target):
            while data := await source.read(65536):
                captured.extend(data)
                target.write(data)
                await target.drain()
            target.close()

        await asyncio.gather(pump(client_reader, upstream_writer), pump(upstream_reader, client_writer),
                             return_exceptions=True)

    listener = netns_socket(namespace)
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handle, sock=listener)
    return server, listener.getsockname()[1]


async def start_relay_in_rig(rig, tls_files, vpcd_leg: bytearray) -> tuple[VpcdRelay, asyncio.Server, int]:
    """Run the relay in the rig's namespace; its connections to vpcd pass a capturing proxy."""
    loop = asyncio.get_running_loop()
    vpcd_proxy, vpcd_proxy_port = await start_capture_proxy(rig.namespace, VPCD_BASE_PORT, vpcd_leg)

    async def open_upstream():
        upstream = netns_socket(rig.namespace)
        upstream.setblocking(False)
        await loop.sock_connect(upstream, ("127.0.0.1", vpcd_proxy_port))
        return await asyncio.open_connection(sock=upstream)

    relay = VpcdRelay(authenticate, server_context(tls_files), open_upstream=open_upstream)
    listener = netns_socket(rig.namespace)
    listener.bind(("127.0.0.1", 0))
    server = await relay.start(sock=listener)
    return relay, server, listener.getsockname()[1]


async def test_relay_card_signs_without_clear_pin(empty_readers, tls_files):
    rig = empty_readers
    tls_leg, vpcd_leg = bytearray(), bytearray()
    relay, relay_server, relay_port = await start_relay_in_rig(rig, tls_files, vpcd_leg)
    phone_proxy, phone_port = await start_capture_proxy(rig.namespace, relay_port, tls_leg)

    async with new_source() as source:
        async for step in wait_for_token(source, card_certificate(rig), timeout=20):
            if step.kind is WaitEventKind.WAITING_FOR_TOKEN:
                await asyncio.to_thread(rig.tap, "officer", 0, relay=(phone_port, DEVICE_TOKEN, str(tls_files[0])))
            present = step
        assert present.kind is WaitEventKind.TOKEN_PRESENT
        assert present.reader == OFFICER_READER
        # The relay runs on this event loop, so every call that reaches the card must leave it free.
        key = await asyncio.to_thread(open_card_key, present.module, present.token, card_pin())
        signature = await key.asign(b"signed through the relay")
        await asyncio.to_thread(key.close)
    await asyncio.to_thread(rig.remove, 0)
    for server in (phone_proxy, relay_server):
        server.close()

    pin = card_pin().encode()
    assert len(signature) == 256
    assert relay.stats.accepted == 1
    assert relay.stats.frames_to_vpcd > 10
    # Control: the plain vpcd leg inside the namespace carries the VERIFY with the PIN ...
    assert pin in vpcd_leg
    # ... and the phone's leg, TLS, carries neither the PIN nor the device token in clear.
    assert len(tls_leg) > 1000
    assert pin not in tls_leg
    assert pin.hex().encode() not in tls_leg
    assert DEVICE_TOKEN.encode() not in tls_leg


async def test_rig_tap_with_wrong_token_is_refused(empty_readers, tls_files):
    rig = empty_readers
    vpcd_leg = bytearray()
    relay, relay_server, relay_port = await start_relay_in_rig(rig, tls_files, vpcd_leg)

    with pytest.raises(RigError):
        await asyncio.to_thread(rig.tap, "officer", 0, relay=(relay_port, "not-the-device-token", str(tls_files[0])))
    relay_server.close()

    assert relay.stats.rejected == 1
    assert relay.stats.upstream_connections == 0
    assert vpcd_leg == b""
