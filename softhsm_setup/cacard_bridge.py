"""A virtual CAC smart card (libcacard) connected to pcscd's vpcd driver: the card side of the rig.

libcacard (Debian ``libcacard0``) emulates a CAC card whose keys and certificates live in an NSS
database; its PIN is the password of that database. This module drives it through ctypes and speaks
the vpcd protocol to pcscd. Every frame is a 2-byte big-endian length and a payload. A 1-byte payload
is a control code (0 power off, 1 power on, 2 reset, 4 ATR request). A longer one is a command APDU,
and its response APDU goes back in one frame. Connecting is a tap of the card, disconnecting a removal.

Run as ``python -m softhsm_setup.cacard_bridge --nss-db DIR`` (inside the rig's network namespace,
where vpcd listens), or through the qsign relay with ``--relay-token`` and the relay's ``--host``/``--port``.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import threading
from pathlib import Path

__all__ = ["CacardEmulator", "VpcdBridge", "VPCD_POWER_OFF", "VPCD_POWER_ON", "VPCD_RESET",
           "VPCD_ATR_REQUEST", "read_frame", "write_frame", "main"]

_logger = logging.getLogger(__name__)

LIBCACARD = "libcacard.so.0"

VPCD_POWER_OFF = 0
VPCD_POWER_ON = 1
VPCD_RESET = 2
VPCD_ATR_REQUEST = 4

#: Largest response libcacard returns: a short APDU's 256 data bytes, or an extended one, plus SW1 SW2.
_MAX_RESPONSE = 65538
_VREADER_OK = 0
_VCARD_EMUL_OK = 0
#: Name of the NSS internal key slot, where ``pk12util`` imports keys into an ``sql:`` database.
NSS_INTERNAL_SLOT = "NSS Certificate DB"


class CardBridgeError(Exception):
    """libcacard or the vpcd connection failed; the message names the step."""


class CacardEmulator:
    """One libcacard virtual reader with an emulated CAC card over an NSS database.

    libcacard keeps global state, so a process can have at most one emulator. ``nss_db`` is the
    directory of an ``sql:`` NSS database; ``certificates`` are the nicknames of the (at most three)
    certificates whose private keys the card offers.
    """

    def __init__(self, nss_db: Path, certificates: list[str], reader_name: str = "qsign-virtual") -> None:
        self._lib = ctypes.CDLL(LIBCACARD)
        self._declare_functions()

        options_text = (f'db="sql:{nss_db}" use_hw=no '
                        f'soft=({NSS_INTERNAL_SLOT},{reader_name},CAC,,{",".join(certificates)})')
        options = self._lib.vcard_emul_options(options_text.encode())
        if not options:
            raise CardBridgeError(f"libcacard rejected the options {options_text!r}")
        if self._lib.vcard_emul_init(options) != _VCARD_EMUL_OK:
            raise CardBridgeError(f"libcacard could not open the NSS database {nss_db}")

        self._reader = self._lib.vreader_get_reader_by_name(reader_name.encode())
        if not self._reader:
            raise CardBridgeError(f"libcacard has no reader {reader_name!r}; check the certificate nicknames")
        self._lock = threading.Lock()
        _logger.info("libcacard card ready in reader %s with certificates %s", reader_name, certificates)

    def _declare_functions(self) -> None:
        lib = self._lib
        lib.vcard_emul_options.argtypes = [ctypes.c_char_p]
        lib.vcard_emul_options.restype = ctypes.c_void_p
        lib.vcard_emul_init.argtypes = [ctypes.c_void_p]
        lib.vcard_emul_init.restype = ctypes.c_int
        lib.vreader_get_reader_by_name.argtypes = [ctypes.c_char_p]
        lib.vreader_get_reader_by_name.restype = ctypes.c_void_p
        lib.vreader_power_on.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        lib.vreader_power_on.restype = ctypes.c_int
        lib.vreader_power_off.argtypes = [ctypes.c_void_p]
        lib.vreader_power_off.restype = ctypes.c_int
        lib.vreader_xfr_bytes.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_int)]
        lib.vreader_xfr_bytes.restype = ctypes.c_int

    def power_on(self) -> bytes:
        """Power the card on (a cold reset) and return its ATR."""
        buffer = ctypes.create_string_buffer(64)
        length = ctypes.c_int(len(buffer))
        with self._lock:
            status = self._lib.vreader_power_on(self._reader, buffer, ctypes.byref(length))
        if status != _VREADER_OK:
            raise CardBridgeError(f"libcacard power on failed with status {status}")
        return buffer.raw[:length.value]

    def power_off(self) -> None:
        with self._lock:
            self._lib.vreader_power_off(self._reader)

    def transmit(self, command: bytes) -> bytes:
        """Send a command APDU to the card and return the response APDU (data, SW1, SW2)."""
        receive = ctypes.create_string_buffer(_MAX_RESPONSE)
        length = ctypes.c_int(len(receive))
        with self._lock:
            status = self._lib.vreader_xfr_bytes(self._reader, command, len(command), receive, ctypes.byref(length))
        if status != _VREADER_OK:
            raise CardBridgeError(f"libcacard APDU exchange failed with status {status}")
        return receive.raw[:length.value]


def _receive_exactly(connection: socket.socket | ssl.SSLSocket, count: int, quick_ack: bool) -> bytes | None:
    chunks = []
    while count:
        if quick_ack:
            # Linux clears TCP_QUICKACK after a while, so it is set again before every read. Without
            # it every command waits for a delayed ACK, about 40 ms.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = connection.recv(count)
        if not chunk:
            return None
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_frame(connection: socket.socket | ssl.SSLSocket, quick_ack: bool = True) -> bytes | None:
    """Read one vpcd frame and return its payload, or ``None`` when the peer closed the connection.

    ``quick_ack`` sets TCP_QUICKACK before each read; only benchmarks turn it off.
    """
    header = _receive_exactly(connection, 2, quick_ack)
    if header is None:
        return None
    (length,) = struct.unpack(">H", header)
    return _receive_exactly(connection, length, quick_ack) if length else b""


def write_frame(connection: socket.socket | ssl.SSLSocket, payload: bytes) -> None:
    """Send one vpcd frame: the payload length as 2 bytes big-endian, then the payload."""
    if len(payload) > 0xFFFF:
        raise CardBridgeError(f"vpcd frame payload too long: {len(payload)} bytes, the maximum is 65535")
    connection.sendall(struct.pack(">H", len(payload)) + payload)


class VpcdBridge:
    """Serves one vpcd connection from a ``CacardEmulator`` until either side closes it."""

    def __init__(self, emulator: CacardEmulator, atr_override: bytes | None = None, quick_ack: bool = True) -> None:
        self.emulator = emulator
        self.atr_override = atr_override
        self.quick_ack = quick_ack
        self.commands = 0

    def serve(self, connection: socket.socket | ssl.SSLSocket) -> None:
        """Handle vpcd's control codes and APDUs on ``connection`` until the connection closes."""
        atr = self.emulator.power_on()
        while True:
            try:
                payload = read_frame(connection, self.quick_ack)
            except OSError as error:
                _logger.info("vpcd connection closed: %s", error)
                return
            if payload is None:
                _logger.info("vpcd closed the connection after %d commands", self.commands)
                return

            if len(payload) == 1:
                code = payload[0]
                if code == VPCD_POWER_OFF:
                    self.emulator.power_off()
                elif code in (VPCD_POWER_ON, VPCD_RESET):
                    atr = self.emulator.power_on()
                elif code == VPCD_ATR_REQUEST:
                    write_frame(connection, self.atr_override or atr)
                else:
                    _logger.warning("ignoring unknown vpcd control code %d", code)
                continue

            self.commands += 1
            write_frame(connection, self.emulator.transmit(payload))


def _connect_relay(host: str, port: int, token: str, ca_file: str | None) -> ssl.SSLSocket:
    """Open a TLS connection to the qsign relay and authenticate with the device bearer token."""
    from token_drivers.relay import HELLO_ACCEPTED, encode_hello

    context = ssl.create_default_context(cafile=ca_file)
    if ca_file is None:
        # NOTE: without --relay-ca the relay's certificate is not checked; tests pass the CA file.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = context.wrap_socket(raw, server_hostname=host)
    write_frame(connection, encode_hello(token))
    answer = read_frame(connection)
    if answer != HELLO_ACCEPTED:
        connection.close()
        raise CardBridgeError("the relay rejected the device token")
    return connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softhsm_setup.cacard_bridge",
                                     description="Connect a libcacard virtual card to vpcd (a tap) until "
                                                 "SIGTERM or until vpcd closes the connection (a removal).")
    parser.add_argument("--nss-db", required=True, type=Path, help="directory of the card's NSS database")
    parser.add_argument("--certificate", action="append", required=True,
                        help="nickname of a certificate on the card (repeatable, at most 3)")
    parser.add_argument("--host", default="127.0.0.1", help="vpcd address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=35963, help="vpcd port of the reader (default 35963)")
    parser.add_argument("--atr", help="hex ATR to report instead of libcacard's (for unknown-card tests)")
    parser.add_argument("--relay-token", help="connect to a qsign relay at --host/--port with this token; "
                                              "read from the environment variable QSIGN_RELAY_TOKEN if '-'")
    parser.add_argument("--relay-ca", help="CA certificate file that the relay's certificate must chain to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="cacard_bridge: %(message)s")

    emulator = CacardEmulator(args.nss_db, args.certificate)
    atr_override = bytes.fromhex(args.atr) if args.atr else None

    if args.relay_token:
        token = os.environ.get("QSIGN_RELAY_TOKEN", "") if args.relay_token == "-" else args.relay_token
        try:
            connection: socket.socket | ssl.SSLSocket = _connect_relay(args.host, args.port, token, args.relay_ca)
        except (CardBridgeError, OSError) as error:
            print(f"cacard_bridge: {error}", file=sys.stderr)
            return 1
    else:
        connection = socket.create_connection((args.host, args.port))
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close_on_signal(signum: int, frame: object) -> None:
        # shutdown() wakes the blocked recv() in serve(), which then returns: the card is removed.
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, close_on_signal)
    signal.signal(signal.SIGINT, close_on_signal)
    print("connected", flush=True)

    VpcdBridge(emulator, atr_override).serve(connection)
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
