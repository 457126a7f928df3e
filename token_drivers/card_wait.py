"""Waiting for the officer's card: driven by PC/SC events, decided by the officer's certificate.

``wait_for_token`` yields ``waiting_for_token`` first, then for every card that appears (or is
already present) either ``token_present`` (its token contains the certificate; the wait ends),
``wrong_token`` (another person's card; the wait goes on) or ``unknown_card`` (no PKCS#11 module is
known for its ATR, or the module shows no token for it; the wait goes on). It raises
``TokenWaitTimedOut`` when no right card appears in time. Nothing polls: the wait sleeps until the
``CardEventSource`` reports an event.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from qsign.i18n import N_
from token_drivers.atr import CardIdentity, format_atr
from token_drivers.errors import TokenError
from token_drivers.hotplug import CardToken, certificate_der, find_certificate_on_reader
from token_drivers.module import load_module
from token_drivers.pcsc import CardEvent, CardEventKind, CardEventSource

__all__ = ["WaitEventKind", "WaitEvent", "TokenWaitTimedOut", "wait_for_token"]

_logger = logging.getLogger(__name__)

#: Tries to read a newly inserted card through its PKCS#11 module, and the pause between them.
READ_ATTEMPTS = 3
READ_RETRY_SECONDS = 0.3


class TokenWaitTimedOut(TokenError):
    code = "token_wait_timeout"
    message_template = N_("No card with the signing certificate appeared within {seconds} s. "
                          "Tap or insert the card and retry.")
    http_status = 504


class WaitEventKind(enum.Enum):
    WAITING_FOR_TOKEN = "waiting_for_token"
    TOKEN_PRESENT = "token_present"
    WRONG_TOKEN = "wrong_token"
    UNKNOWN_CARD = "unknown_card"


@dataclass(frozen=True)
class WaitEvent:
    """A step of the wait. ``token`` is set for ``token_present`` and ``wrong_token``."""

    kind: WaitEventKind
    reader: str | None = None
    card: CardIdentity | None = None
    token: CardToken | None = None
    #: PKCS#11 module of the card (for ``token_present``: the one to open the key with).
    module: str | None = None
    #: Readers known when the wait started (``waiting_for_token`` only).
    readers: tuple[str, ...] = ()
    monotonic: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"event": self.kind.value, "reader": self.reader}
        if self.kind is WaitEventKind.WAITING_FOR_TOKEN:
            result["readers"] = list(self.readers)
        if self.card is not None:
            result["atr"] = format_atr(self.card.atr)
            result["card"] = self.card.name
        if self.token is not None:
            result["token"] = self.token.token_label
            result["slot"] = self.token.slot_id
        return result


async def _check_card(reader: str, card: CardIdentity | None, certificate_der_bytes: bytes) -> WaitEvent:
    if card is None or card.module is None:
        return WaitEvent(WaitEventKind.UNKNOWN_CARD, reader=reader, card=card)

    # Loading runs C_Initialize, which may talk to the card; a relay on this event loop must stay free.
    module = await asyncio.to_thread(load_module, card.module)
    token = None
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            token = await module.run(find_certificate_on_reader, module, reader, certificate_der_bytes)
        except TokenError as error:
            _logger.info("reading the card in %s failed (attempt %d of %d): %s", reader, attempt, READ_ATTEMPTS,
                         error.code)
        if token is not None:
            break
        # The module can lag behind pcscd's event by a moment; a card pulled meanwhile fails every try.
        if attempt < READ_ATTEMPTS:
            await asyncio.sleep(READ_RETRY_SECONDS)
    if token is None:
        return WaitEvent(WaitEventKind.UNKNOWN_CARD, reader=reader, card=card, module=card.module)
    kind = WaitEventKind.TOKEN_PRESENT if token.key_id is not None else WaitEventKind.WRONG_TOKEN
    return WaitEvent(kind, reader=reader, card=card, token=token, module=card.module)


async def wait_for_token(source: CardEventSource, certificate: Any, timeout: float) -> AsyncIterator[WaitEvent]:
    """Yield the steps of waiting for a card that contains ``certificate`` (asn1crypto, cryptography or DER).

    ``source`` must be started. The generator returns after ``token_present`` and raises
    ``TokenWaitTimedOut`` after ``timeout`` seconds without one.
    """
    wanted = certificate_der(certificate)
    deadline = time.monotonic() + timeout
    queue = source.subscribe()
    try:
        checked: set[tuple[str, float]] = set()
        yield WaitEvent(WaitEventKind.WAITING_FOR_TOKEN, readers=tuple(source.readers))

        # Cards already in a reader count as if they had just been inserted.
        for name, state in list(source.readers.items()):
            if state.card_present and state.inserted_at is not None:
                checked.add((name, state.inserted_at))
                result = await _check_card(name, state.card, wanted)
                yield result
                if result.kind is WaitEventKind.TOKEN_PRESENT:
                    return

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TokenWaitTimedOut(seconds=f"{timeout:g}")
            try:
                event: CardEvent = await asyncio.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:
                raise TokenWaitTimedOut(seconds=f"{timeout:g}") from None
            if event.kind is not CardEventKind.CARD_INSERTED or event.reader is None:
                continue
            if (event.reader, event.monotonic) in checked:
                continue
            checked.add((event.reader, event.monotonic))

            result = await _check_card(event.reader, event.card, wanted)
            _logger.info("card in %s: %s", event.reader, result.kind.value)
            yield result
            if result.kind is WaitEventKind.TOKEN_PRESENT:
                return
    finally:
        source.unsubscribe(queue)
