"""``qsign tokens --watch``: print PC/SC reader and card events as they happen."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal

from qsign.config import Config
from qsign.i18n import N_, translate
from token_drivers.atr import format_atr, load_catalog
from token_drivers.pcsc import CardEvent, CardEventKind, CardEventSource

__all__ = ["format_event", "watch_events"]

_MESSAGES = {
    CardEventKind.READER_ADDED: N_("reader added: {reader}"),
    CardEventKind.READER_REMOVED: N_("reader removed: {reader}"),
    CardEventKind.CARD_REMOVED: N_("card removed from {reader}"),
    CardEventKind.SERVICE_LOST: N_("pcscd is not reachable; waiting for it to come back"),
    CardEventKind.SERVICE_RESTORED: N_("pcscd is reachable again"),
}


def format_event(event: CardEvent, language: str) -> str:
    """Return one line that describes ``event`` in ``language``, with the local time."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    if event.kind is not CardEventKind.CARD_INSERTED:
        return f"[{stamp}] " + translate(_MESSAGES[event.kind], language, reader=event.reader)

    atr = format_atr(event.atr or b"")
    card = event.card
    if card is None or card.name is None:
        text = translate("card inserted in {reader}: unknown card, ATR {atr}", language, reader=event.reader, atr=atr)
    else:
        text = translate("card inserted in {reader}: {card}, ATR {atr}", language, reader=event.reader,
                         card=card.name, atr=atr)
    if card is not None and card.module is not None:
        text += translate("; PKCS#11 module {module}", language, module=card.module)
    else:
        text += translate("; qsign has no PKCS#11 module for this card (add one under [cards] in qsign.toml)",
                          language)
    return f"[{stamp}] {text}"


async def _watch(config: Config, language: str, as_json: bool, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    source = CardEventSource(load_catalog(config.raw))
    # Subscribed before the start, so the readers and cards present at start are printed too.
    queue = source.subscribe()
    async with source:
        if not as_json:
            print(translate("Watching PC/SC readers; press Ctrl+C to stop.", language), flush=True)
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            if as_json:
                print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
            else:
                print(format_event(event, language), flush=True)


def watch_events(config: Config, language: str, as_json: bool = False, duration: float | None = None) -> int:
    """Print reader and card events until Ctrl+C, SIGTERM or ``duration`` seconds; return the exit code."""
    asyncio.run(_watch(config, language, as_json, duration))
    return 0
