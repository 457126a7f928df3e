"""The virtual smart-card rig for tests: pcscd with vpcd in a network namespace and libcacard cards.

pcsc-lite reads ``PCSCLITE_CSOCK_NAME`` once per process, at the first PC/SC call, so importing this
module sets it to the socket of the rig's state dir, fixed for the test session. Test modules import
the ``card_rig`` fixture from here; it starts the rig once per session and stops it at the end. It
skips only when the machine cannot run the rig (not root, or no ``ip netns``); CI runs as root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from softhsm_setup.card_rig import CARD_PIN, CARDS, CardRig, card_rig_unavailable_reason
from token_drivers.atr import load_catalog
from token_drivers.module import OPENSC_MODULE_CANDIDATES, find_installed_module
from token_drivers.pcsc import CardEvent, CardEventKind, CardEventSource, card_absent_within

#: One namespace per pytest process, so two test runs on one machine (each with its own pcscd and
#: vpcd ports) do not meet.
_NAMESPACE_PREFIX = "qsign-card-test-"
TEST_NAMESPACE = f"{_NAMESPACE_PREFIX}{os.getpid()}"
_STATE_DIR = Path(tempfile.gettempdir()) / f"qsign-card-rig-{os.getpid()}"
os.environ["PCSCLITE_CSOCK_NAME"] = str(_STATE_DIR / "card" / "run" / "pcscd.comm")

OPENSC = find_installed_module(OPENSC_MODULE_CANDIDATES)
OFFICER_READER = CardRig.reader_name(0)
SECOND_READER = CardRig.reader_name(1)


def _clear_stale_namespaces() -> None:
    """Delete the namespaces of test runs whose pytest process has ended, with what they left running."""
    netns_dir = Path("/run/netns")
    if not netns_dir.is_dir():
        return
    for entry in netns_dir.iterdir():
        if not entry.name.startswith(_NAMESPACE_PREFIX):
            continue
        owner = entry.name[len(_NAMESPACE_PREFIX):]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _clear_namespace(entry.name)


def _clear_namespace(namespace: str) -> None:
    """Stop the processes a crashed run left in ``namespace`` (its pcscd and bridges) and delete it."""
    listing = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in listing.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", namespace], check=False)


@pytest.fixture(scope="session")
def card_rig() -> Iterator[CardRig]:
    reason = card_rig_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if OPENSC is None:
        pytest.skip("OpenSC's opensc-pkcs11.so is not installed")

    _clear_stale_namespaces()
    rig = CardRig(_STATE_DIR, namespace=TEST_NAMESPACE)
    rig.up()
    try:
        yield rig
    finally:
        rig.down()
        shutil.rmtree(_STATE_DIR, ignore_errors=True)


@pytest.fixture
def empty_readers(card_rig: CardRig) -> Iterator[CardRig]:
    """The rig with both readers empty, as pcscd reports them, at the start of the test; emptied at its end."""
    for reader in range(2):
        card_rig.remove(reader)
    if not card_rig.socket_path.exists():
        card_rig.up()
    for reader in range(2):
        # pcscd checks vpcd's readers every 400 ms, so a removal shows after up to that long.
        assert card_absent_within(CardRig.reader_name(reader), 3.0), f"reader {reader} still reports a card"
    yield card_rig
    for reader in range(2):
        card_rig.remove(reader)


def card_certificate(rig: CardRig, card: str = "officer") -> x509.Certificate:
    return x509.load_pem_x509_certificate(rig.certificate_path(CARDS[card]).read_bytes())


def card_pin() -> str:
    return CARD_PIN


def new_source() -> CardEventSource:
    return CardEventSource(load_catalog(), reconnect_interval=0.1)


async def next_event(queue: asyncio.Queue[CardEvent], kind: CardEventKind, reader: str | None = None,
                     timeout: float = 10.0) -> CardEvent:
    """Return the next event of ``kind`` (on ``reader`` when given), skipping others; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.value} event on {reader or 'any reader'} within {timeout} s")
        try:
            event = await asyncio.wait_for(queue.get(), remaining)
        except asyncio.TimeoutError:
            continue
        if event.kind is kind and (reader is None or event.reader == reader):
            return event
