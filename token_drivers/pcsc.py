"""PC/SC reader and card events through pyscard: readers added and removed, cards inserted and removed.

``CardEventSource`` runs one thread that blocks in ``SCardGetStatusChange`` on every reader and on
pcsc-lite's ``\\\\?PnP?\\Notification`` pseudo-reader, so events arrive as pcscd reports them, with no
polling. When pcscd goes away (``SCARD_E_NO_SERVICE``, ``SCARD_E_SERVICE_STOPPED``) the source reports
``service_lost`` and the removal of every card and reader it knew, then tries to establish a new
context every ``reconnect_interval`` seconds and reports ``service_restored`` and the readers and cards
it finds. Consumers read events from asyncio (``CardEventSource.events``) or from a callback.

The pcscd socket comes from ``PCSCLITE_CSOCK_NAME``; ``apply_pcsc_environment`` sets it from
``[pcsc] socket`` in ``qsign.toml``. pcsc-lite reads it once per process, so call that first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from qsign.config import Config
from token_drivers.atr import CardCatalog, CardIdentity, format_atr

__all__ = ["card_absent_within", "CardEventKind", "CardEvent", "ReaderState", "CardEventSource", "apply_pcsc_environment",
           "PnP_NOTIFICATION"]

_logger = logging.getLogger(__name__)

PnP_NOTIFICATION = "\\\\?PnP?\\Notification"


def apply_pcsc_environment(config: Config) -> None:
    """Point pcsc-lite at the pcscd socket named by ``[pcsc] socket`` in ``qsign.toml``, if any.

    An explicit ``PCSCLITE_CSOCK_NAME`` in the environment wins. Must run before the first PC/SC call
    of the process (pyscard, or a PKCS#11 module such as OpenSC), because pcsc-lite reads it once.
    """
    socket_path = (config.raw.get("pcsc") or {}).get("socket")
    if socket_path and "PCSCLITE_CSOCK_NAME" not in os.environ:
        os.environ["PCSCLITE_CSOCK_NAME"] = str(config.resolve(socket_path))


def card_absent_within(reader: str, timeout: float) -> bool:
    """Return whether ``reader`` has no card now or loses it within ``timeout`` seconds.

    A reader that pcscd no longer lists, or pcscd being unreachable, counts as no card.
    """
    from smartcard import scard

    result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if result != scard.SCARD_S_SUCCESS:
        return True
    try:
        deadline = time.monotonic() + timeout
        current = scard.SCARD_STATE_UNAWARE
        while True:
            wait_ms = 0 if current == scard.SCARD_STATE_UNAWARE else max(0, int((deadline - time.monotonic()) * 1000))
            result, states = scard.SCardGetStatusChange(context, wait_ms, [(reader, current)])
            if result == scard.SCARD_E_TIMEOUT:
                return False
            if result != scard.SCARD_S_SUCCESS:
                return True
            (_, event_state, _), = states
            if not event_state & scard.SCARD_STATE_PRESENT:
                return True
            if time.monotonic() >= deadline:
                return False
            # Still present; another bit (such as SCARD_STATE_INUSE) changed. Wait from the new state.
            current = event_state & ~scard.SCARD_STATE_CHANGED
    finally:
        scard.SCardReleaseContext(context)


class CardEventKind(enum.Enum):
    READER_ADDED = "reader_added"
    READER_REMOVED = "reader_removed"
    CARD_INSERTED = "card_inserted"
    CARD_REMOVED = "card_removed"
    #: pcscd stopped or cannot be reached; every reader is reported removed after this.
    SERVICE_LOST = "service_lost"
    #: A new PC/SC context was established after ``service_lost``.
    SERVICE_RESTORED = "service_restored"


@dataclass(frozen=True)
class CardEvent:
    """One reader or card event. ``atr`` and ``card`` are set for ``card_inserted`` only."""

    kind: CardEventKind
    reader: str | None
    atr: bytes | None = None
    card: CardIdentity | None = None
    #: ``time.monotonic()`` when the monitor thread saw the event.
    monotonic: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"event": self.kind.value, "reader": self.reader}
        if self.atr is not None:
            result["atr"] = format_atr(self.atr)
        if self.card is not None:
            result["card"] = self.card.name
            result["module"] = self.card.module
        return result


@dataclass
class ReaderState:
    """The monitor's view of a reader: whether a card is in it, and the card's ATR."""

    name: str
    card_present: bool = False
    atr: bytes | None = None
    card: CardIdentity | None = None
    #: pcsc-lite's card event counter (upper 16 bits of the reader's event state).
    event_count: int | None = None
    #: ``CardEvent.monotonic`` of the ``card_inserted`` event of the card now present.
    inserted_at: float | None = None


class CardEventSource:
    """Watches PC/SC readers in a thread and hands out ``CardEvent`` objects.

    Use as an async context manager and iterate ``events()``, or pass ``callback`` (called in the
    monitor thread). The source reports the readers and cards present at start as ``reader_added``
    and ``card_inserted`` events, so a consumer sees a card that was already there.
    """

    def __init__(self, catalog: CardCatalog | None = None, *,
                 callback: Callable[[CardEvent], None] | None = None,
                 reconnect_interval: float = 0.5) -> None:
        from smartcard import scard  # pyscard is an optional dependency (qsign[pcsc])

        self._scard = scard
        self.catalog = catalog
        self.callback = callback
        self.reconnect_interval = reconnect_interval
        self.readers: dict[str, ReaderState] = {}
        self.service_available = False
        self._context: int | None = None
        self._context_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[CardEvent]]] = []
        self._subscribers_lock = threading.Lock()

    # ----- life cycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pcsc-monitor", daemon=True)
        self._thread.start()
        _logger.info("PC/SC monitor started (PCSCLITE_CSOCK_NAME=%s)", os.environ.get("PCSCLITE_CSOCK_NAME", "default"))

    def stop(self) -> None:
        """Stop the monitor thread; returns once it has ended."""
        self._stopping.set()
        deadline = time.monotonic() + 10
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            # SCardCancel ends a wait in progress only, and the thread may be between two waits, so
            # cancel again until the thread has seen the stop flag.
            with self._context_lock:
                if self._context is not None:
                    self._scard.SCardCancel(self._context)
            self._thread.join(timeout=0.05)
        if self._thread is not None and self._thread.is_alive():
            _logger.warning("PC/SC monitor thread did not stop within 10 s")
        self._thread = None
        _logger.info("PC/SC monitor stopped")

    async def __aenter__(self) -> CardEventSource:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def subscribe(self) -> asyncio.Queue[CardEvent]:
        """Return a queue that receives every later event; call from the event loop that reads it."""
        queue: asyncio.Queue[CardEvent] = asyncio.Queue()
        with self._subscribers_lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[CardEvent]) -> None:
        with self._subscribers_lock:
            self._subscribers = [(loop, q) for loop, q in self._subscribers if q is not queue]

    async def events(self) -> AsyncIterator[CardEvent]:
        """Yield events from now on, until the caller stops iterating."""
        queue = self.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            self.unsubscribe(queue)

    # ----- monitor thread

    def _emit(self, event: CardEvent) -> None:
        _logger.info("PC/SC event %s on reader %s%s", event.kind.value, event.reader,
                     f" (ATR {format_atr(event.atr)})" if event.atr else "")
        if self.callback is not None:
            self.callback(event)
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that event loop has closed
                self.unsubscribe(queue)

    def _identify(self, atr: bytes) -> CardIdentity | None:
        return self.catalog.identify(atr) if self.catalog is not None else None

    def _run(self) -> None:
        scard = self._scard
        lost_reported = False
        while not self._stopping.is_set():
            result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if result != scard.SCARD_S_SUCCESS:
                if not lost_reported:
                    _logger.warning("cannot reach pcscd: %s; retrying every %.1f s",
                                    scard.SCardGetErrorMessage(result), self.reconnect_interval)
                    self._lose_service()
                    lost_reported = True
                self._stopping.wait(self.reconnect_interval)
                continue

            with self._context_lock:
                self._context = context
            if lost_reported:
                self._emit(CardEvent(CardEventKind.SERVICE_RESTORED, None))
            lost_reported = False
            self.service_available = True
            try:
                self._watch(context)
            finally:
                with self._context_lock:
                    self._context = None
                scard.SCardReleaseContext(context)

            if not self._stopping.is_set():
                self._lose_service()
                lost_reported = True

    def _lose_service(self) -> None:
        """Report every known card and reader gone, once, when pcscd becomes unreachable."""
        if self.service_available or self.readers:
            self._emit(CardEvent(CardEventKind.SERVICE_LOST, None))
        self.service_available = False
        for name in list(self.readers):
            self._remove_reader(name)

    def _remove_reader(self, name: str) -> None:
        state = self.readers.pop(name)
        if state.card_present:
            self._emit(CardEvent(CardEventKind.CARD_REMOVED, name))
        self._emit(CardEvent(CardEventKind.READER_REMOVED, name))

    def _list_readers(self, context: int) -> list[str] | None:
        scard = self._scard
        result, readers = scard.SCardListReaders(context, [])
        if result in (scard.SCARD_E_NO_READERS_AVAILABLE,):
            return []
        if result != scard.SCARD_S_SUCCESS:
            return None
        return list(readers)

    def _watch(self, context: int) -> None:
        """Report changes until pcscd goes away or ``stop`` cancels the wait."""
        scard = self._scard
        lost = (scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_E_INVALID_HANDLE,
                scard.SCARD_F_COMM_ERROR)
        known_states: dict[str, int] = {}
        pnp_state = scard.SCARD_STATE_UNAWARE

        while not self._stopping.is_set():
            readers = self._list_readers(context)
            if readers is None:
                return
            for name in [name for name in self.readers if name not in readers]:
                known_states.pop(name, None)
                self._remove_reader(name)
            for name in readers:
                if name not in self.readers:
                    self.readers[name] = ReaderState(name)
                    known_states[name] = scard.SCARD_STATE_UNAWARE
                    self._emit(CardEvent(CardEventKind.READER_ADDED, name))

            states = [(name, known_states[name]) for name in readers] + [(PnP_NOTIFICATION, pnp_state)]
            # No timeout: a change, a new reader, pcscd stopping or SCardCancel ends the wait.
            result, new_states = scard.SCardGetStatusChange(context, scard.INFINITE, states)
            if result == scard.SCARD_E_CANCELLED or self._stopping.is_set():
                return
            if result in lost:
                _logger.warning("pcscd connection lost: %s", scard.SCardGetErrorMessage(result))
                return
            if result == scard.SCARD_E_UNKNOWN_READER:
                continue  # a reader left between listing and waiting; list again
            if result != scard.SCARD_S_SUCCESS:
                _logger.warning("SCardGetStatusChange failed: %s; retrying", scard.SCardGetErrorMessage(result))
                self._stopping.wait(self.reconnect_interval)
                continue

            for name, event_state, atr in new_states:
                if name == PnP_NOTIFICATION:
                    pnp_state = event_state & ~scard.SCARD_STATE_CHANGED
                    continue
                known_states[name] = event_state & ~scard.SCARD_STATE_CHANGED
                self._update_reader(name, event_state, bytes(atr))

    def _update_reader(self, name: str, event_state: int, atr: bytes) -> None:
        scard = self._scard
        state = self.readers.get(name)
        if state is None:
            return
        present = bool(event_state & scard.SCARD_STATE_PRESENT) and not (event_state & scard.SCARD_STATE_MUTE)
        # A card removed and inserted again between two waits leaves the state "present" but moves
        # the counter, so a changed counter also means a new card.
        count = event_state >> 16
        replaced = state.event_count is not None and count != state.event_count
        state.event_count = count
        if present and (not state.card_present or replaced or (atr and atr != state.atr)):
            if state.card_present:
                self._emit(CardEvent(CardEventKind.CARD_REMOVED, name))
            event = CardEvent(CardEventKind.CARD_INSERTED, name, atr=atr, card=self._identify(atr))
            state.card_present, state.atr, state.card, state.inserted_at = True, atr, event.card, event.monotonic
            self._emit(event)
        elif not present and state.card_present:
            state.card_present, state.atr, state.card, state.inserted_at = False, None, None, None
            self._emit(CardEvent(CardEventKind.CARD_REMOVED, name))
