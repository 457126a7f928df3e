"""The agent's endpoint for phone card readers: ``token_drivers.relay.VpcdRelay`` behind the agent's TLS.

With ``[agent] relay_listen = "HOST:PORT"`` the agent listens there with its own TLS certificate (the
one whose fingerprint the pairing QR code carries). A phone reader app sends its paired device's
bearer token in the relay's hello. The relay checks it like the API's ``Authorization`` header, by
its hash in the archive, and rejects revoked devices. No byte goes to vpcd at ``[agent] relay_vpcd``
before that check passes. The relay is advertised by zeroconf as ``_qsign-vpcd._tcp.local.``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from archive.api import Archive
from qsign.errors import QsignError
from token_drivers.relay import VpcdRelay

from agent.pairing import authenticate

__all__ = ["start_card_relay", "relay_address"]

_logger = logging.getLogger(__name__)


def _device_token_checker(archive: Archive):
    def check(token: str) -> bool:
        try:
            device = authenticate(archive, f"Bearer {token}")
        except QsignError as error:
            _logger.warning("relay: device token rejected (%s)", error.code)
            return False
        _logger.info("relay: device %s of %s authenticated", device.id, device.owner)
        return True

    return check


async def start_card_relay(archive: Archive, ssl_context: ssl.SSLContext, listen: tuple[str, int],
                           vpcd: tuple[str, int]) -> tuple[VpcdRelay, asyncio.Server]:
    """Start the relay on ``listen`` (port 0 picks one), forwarding authenticated phones to ``vpcd``."""
    relay = VpcdRelay(_device_token_checker(archive), ssl_context, upstream_host=vpcd[0], upstream_port=vpcd[1])
    server = await relay.start(listen[0], listen[1])
    return relay, server


def relay_address(server: asyncio.Server) -> tuple[str, int]:
    """Return the IPv4 address and port to advertise for the relay's listening socket."""
    host, port = server.sockets[0].getsockname()[:2]
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostbyname(socket.gethostname())
    return host, port
