"""Relay for phone card readers: vpcd frames from an authenticated TLS client to vpcd on 127.0.0.1.

vpcd listens on a fixed port on all interfaces and carries each APDU, including the PIN inside
VERIFY, in clear. A phone reader app therefore connects to this relay instead, over TLS. It first
sends one hello frame with its paired device's bearer token. Only after ``authenticate`` accepts
the token does the relay open the connection to vpcd and copy frames both ways. Before that,
not one byte reaches vpcd, and a rejected client gets ``HELLO_REJECTED`` and is disconnected.

Frames are vpcd's: a 2-byte big-endian length, then the payload. The hello payload is
``HELLO_PREFIX`` followed by the token in UTF-8.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroconf import ServiceInfo

__all__ = ["VpcdRelay", "RelayStats", "HELLO_PREFIX", "HELLO_ACCEPTED", "HELLO_REJECTED", "encode_hello",
           "MAX_HELLO_LENGTH", "RELAY_SERVICE_TYPE", "relay_service_info"]

_logger = logging.getLogger(__name__)

HELLO_PREFIX = b"QSIGN-RELAY/1 "
HELLO_ACCEPTED = b"OK"
HELLO_REJECTED = b"NO"
#: A hello longer than this is rejected without reading it whole.
MAX_HELLO_LENGTH = 4096
#: Zeroconf service type under which an agent advertises the relay.
RELAY_SERVICE_TYPE = "_qsign-vpcd._tcp.local."

Authenticator = Callable[[str], bool | Awaitable[bool]]
UpstreamOpener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def encode_hello(token: str) -> bytes:
    """Return the hello payload that carries ``token``."""
    return HELLO_PREFIX + token.encode("utf-8")


@dataclass
class RelayStats:
    """Counters of one relay, for logs and tests."""

    accepted: int = 0
    rejected: int = 0
    upstream_connections: int = 0
    frames_to_vpcd: int = 0
    frames_from_vpcd: int = 0


def relay_service_info(instance: str, address: str, port: int, certificate_sha256: str) -> "ServiceInfo":
    """Return the zeroconf record that advertises the relay; TXT ``fp`` is the TLS certificate's SHA-256."""
    from zeroconf import ServiceInfo

    return ServiceInfo(RELAY_SERVICE_TYPE, f"{instance}.{RELAY_SERVICE_TYPE}",
                       addresses=[socket.inet_aton(address)], port=port,
                       properties={"fp": certificate_sha256, "proto": "vpcd-relay/1"})


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(2)
    (length,) = struct.unpack(">H", header)
    return await reader.readexactly(length)


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">H", len(payload)) + payload)


class VpcdRelay:
    """Accepts TLS clients, authenticates each by bearer token, then relays it to vpcd.

    ``authenticate(token)`` returns (or resolves to) whether the token belongs to a paired device.
    ``open_upstream`` opens the connection to vpcd; the default connects to ``upstream_host`` and
    ``upstream_port``. A client that sends no hello within ``hello_timeout`` seconds is dropped.
    """

    def __init__(self, authenticate: Authenticator, ssl_context: ssl.SSLContext, *,
                 upstream_host: str = "127.0.0.1", upstream_port: int = 35963,
                 open_upstream: UpstreamOpener | None = None, hello_timeout: float = 10.0) -> None:
        self.authenticate = authenticate
        self.ssl_context = ssl_context
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._open_upstream = open_upstream
        self.hello_timeout = hello_timeout
        self.stats = RelayStats()

    async def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> asyncio.Server:
        """Start listening (on ``sock`` when given, else on ``host``:``port``) and return the server."""
        if sock is not None:
            server = await asyncio.start_server(self._handle, sock=sock, ssl=self.ssl_context)
        else:
            server = await asyncio.start_server(self._handle, host, port, ssl=self.ssl_context)
        addresses = ", ".join(str(s.getsockname()) for s in server.sockets)
        _logger.info("vpcd relay listening on %s, forwarding to %s:%d", addresses, self.upstream_host,
                     self.upstream_port)
        return server

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._open_upstream is not None:
            return await self._open_upstream()
        return await asyncio.open_connection(self.upstream_host, self.upstream_port)

    async def _check_token(self, token: str) -> bool:
        verdict = self.authenticate(token)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict is True

    async def _read_hello(self, reader: asyncio.StreamReader) -> str | None:
        header = await reader.readexactly(2)
        (length,) = struct.unpack(">H", header)
        if length > MAX_HELLO_LENGTH:
            return None
        payload = await reader.readexactly(length)
        if not payload.startswith(HELLO_PREFIX):
            return None
        try:
            return payload[len(HELLO_PREFIX):].decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            token = await asyncio.wait_for(self._read_hello(reader), self.hello_timeout)
            accepted = token is not None and await self._check_token(token)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as error:
            _logger.info("relay client %s: no valid hello (%s); disconnected", peer, type(error).__name__)
            self.stats.rejected += 1
            writer.close()
            return

        if not accepted:
            self.stats.rejected += 1
            _logger.warning("relay client %s: device token rejected; disconnected (%d rejected so far)",
                            peer, self.stats.rejected)
            _write_frame(writer, HELLO_REJECTED)
            await self._close(writer)
            return

        try:
            upstream_reader, upstream_writer = await self._upstream()
        except OSError as error:
            _logger.error("relay client %s: cannot reach vpcd at %s:%d: %s", peer, self.upstream_host,
                          self.upstream_port, error)
            await self._close(writer)
            return
        sock = upstream_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.accepted += 1
        self.stats.upstream_connections += 1
        _write_frame(writer, HELLO_ACCEPTED)
        await writer.drain()
        _logger.info("relay client %s: authenticated; relaying to vpcd", peer)

        await self._relay(reader, writer, upstream_reader, upstream_writer)
        _logger.info("relay client %s: disconnected", peer)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                     upstream_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> None:
        """Copy whole frames both ways until one side closes, then close both (a card removal)."""

        async def pump(source: asyncio.StreamReader, target: asyncio.StreamWriter, to_vpcd: bool) -> None:
            while True:
                payload = await _read_frame(source)
                _write_frame(target, payload)
                await target.drain()
                if to_vpcd:
                    self.stats.frames_to_vpcd += 1
                else:
                    self.stats.frames_from_vpcd += 1

        tasks = [asyncio.create_task(pump(client_reader, upstream_writer, True)),
                 asyncio.create_task(pump(upstream_reader, client_writer, False))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close(upstream_writer)
            await self._close(client_writer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
