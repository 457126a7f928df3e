"""PC/SC reader and card events from the real pcscd and vpcd, and the token wait they drive."""

from __future__ import annotations

import asyncio
import functools

import pytest

from helpers.card_rig import (OFFICER_READER, SECOND_READER, card_certificate, card_pin, card_rig,  # noqa: F401
                              empty_readers, new_source, next_event)
from token_drivers.atr import format_atr
from token_drivers.card_wait import TokenWaitTimedOut, WaitEventKind, wait_for_token
from token_drivers.hotplug import open_card_key
from token_drivers.pcsc import CardEventKind

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")

LIBCACARD_ATR = "3B 7A 18 00 00 73 66 74 65 20 63 64 31 34 34"


def unknown_atr() -> bytes:
    """An ATR that neither qsign's table nor smartcard_list.txt lists: T=1 with 8 historical bytes."""
    body = bytes.fromhex("3B 88 80 01") + b"qsigntst"
    check = functools.reduce(lambda a, b: a ^ b, body[1:], 0)
    return body + bytes([check])


async def tap(rig, *args, **kwargs):
    return await asyncio.to_thread(rig.tap, *args, **kwargs)


async def remove(rig, reader):
    return await asyncio.to_thread(rig.remove, reader)


async def test_tap_and_remove_events(empty_readers):
    rig = empty_readers
    source = new_source()
    queue = source.subscribe()
    async with source:
        await next_event(queue, CardEventKind.READER_ADDED, OFFICER_READER)

        await tap(rig, "officer", 0)
        inserted = await next_event(queue, CardEventKind.CARD_INSERTED, OFFICER_READER)
        assert format_atr(inserted.atr) == LIBCACARD_ATR
        assert inserted.card.name == "Virtual CAC card (libcacard)"
        assert inserted.card.module is not None
        assert inserted.card.module.endswith("opensc-pkcs11.so")
        assert source.readers[OFFICER_READER].card_present

        await remove(rig, 0)
        removed = await next_event(queue, CardEventKind.CARD_REMOVED, OFFICER_READER)
        assert removed.atr is None
        assert not source.readers[OFFICER_READER].card_present


async def test_unknown_atr_named_nowhere(empty_readers):
    rig = empty_readers
    source = new_source()
    queue = source.subscribe()
    async with source:
        await tap(rig, "officer", 0, atr=unknown_atr())
        inserted = await next_event(queue, CardEventKind.CARD_INSERTED, OFFICER_READER)

    assert inserted.atr == unknown_atr()
    assert inserted.card.name is None
    assert inserted.card.module is None
    assert not inserted.card.known


async def test_wait_skips_unknown_card(empty_readers):
    rig = empty_readers
    async with new_source() as source:
        await tap(rig, "officer", 1, atr=unknown_atr())
        steps = []
        async for step in wait_for_token(source, card_certificate(rig), timeout=20):
            steps.append(step)
            if step.kind is WaitEventKind.UNKNOWN_CARD:
                await tap(rig, "officer", 0)

    kinds = [step.kind for step in steps]
    assert kinds == [WaitEventKind.WAITING_FOR_TOKEN, WaitEventKind.UNKNOWN_CARD, WaitEventKind.TOKEN_PRESENT]
    assert steps[1].reader == SECOND_READER
    assert steps[2].reader == OFFICER_READER
    assert steps[2].token.token_label == "赵敏"


async def test_wrong_card_then_right_card(empty_readers):
    rig = empty_readers
    async with new_source() as source:
        await asyncio.sleep(0.2)
        steps = []
        async for step in wait_for_token(source, card_certificate(rig, "officer"), timeout=20):
            steps.append(step)
            if step.kind is WaitEventKind.WAITING_FOR_TOKEN:
                await tap(rig, "other", 0)
            elif step.kind is WaitEventKind.WRONG_TOKEN:
                await remove(rig, 0)
                await tap(rig, "officer", 1)

    kinds = [step.kind for step in steps]
    assert kinds == [WaitEventKind.WAITING_FOR_TOKEN, WaitEventKind.WRONG_TOKEN, WaitEventKind.TOKEN_PRESENT]
    assert set(steps[0].readers) == {OFFICER_READER, SECOND_READER}
    assert steps[1].reader == OFFICER_READER
    assert steps[1].token.token_label == "刘洋"
    assert steps[1].token.key_id is None
    assert steps[2].reader == SECOND_READER
    assert steps[2].token.token_label == "赵敏"
    assert steps[2].token.key_id is not None


async def test_two_readers_two_cards(empty_readers):
    rig = empty_readers
    await tap(rig, "officer", 0)
    await tap(rig, "other", 1)
    async with new_source() as source:
        officer_steps = [step async for step in wait_for_token(source, card_certificate(rig, "officer"), 20)]
        other_steps = [step async for step in wait_for_token(source, card_certificate(rig, "other"), 20)]
        readers = {name: state.card_present for name, state in source.readers.items()}

    assert readers == {OFFICER_READER: True, SECOND_READER: True}
    assert officer_steps[-1].kind is WaitEventKind.TOKEN_PRESENT
    assert officer_steps[-1].reader == OFFICER_READER
    assert other_steps[-1].kind is WaitEventKind.TOKEN_PRESENT
    assert other_steps[-1].reader == SECOND_READER
    assert other_steps[-1].token.token_label == "刘洋"


async def test_wait_times_out_without_card(empty_readers):
    rig = empty_readers
    async with new_source() as source:
        steps = []
        with pytest.raises(TokenWaitTimedOut) as raised:
            async for step in wait_for_token(source, card_certificate(rig), timeout=1.0):
                steps.append(step)

    assert [step.kind for step in steps] == [WaitEventKind.WAITING_FOR_TOKEN]
    assert raised.value.code == "token_wait_timeout"


async def test_events_survive_pcscd_restart(empty_readers):
    rig = empty_readers
    source = new_source()
    queue = source.subscribe()
    async with source:
        await tap(rig, "officer", 0)
        await next_event(queue, CardEventKind.CARD_INSERTED, OFFICER_READER)

        await asyncio.to_thread(rig.restart_pcscd)
        await next_event(queue, CardEventKind.SERVICE_LOST)
        # The bridge loses its vpcd connection when pcscd stops: the card is gone.
        await next_event(queue, CardEventKind.CARD_REMOVED, OFFICER_READER)
        await next_event(queue, CardEventKind.SERVICE_RESTORED)
        await next_event(queue, CardEventKind.READER_ADDED, OFFICER_READER)

        await tap(rig, "officer", 0)
        inserted = await next_event(queue, CardEventKind.CARD_INSERTED, OFFICER_READER)
        steps = [step async for step in wait_for_token(source, card_certificate(rig), 20)]

    assert format_atr(inserted.atr) == LIBCACARD_ATR
    assert steps[-1].kind is WaitEventKind.TOKEN_PRESENT
    assert steps[-1].reader == OFFICER_READER
    # OpenSC's PC/SC context died with the old pcscd; the module was reinitialised and signs again.
    key = await asyncio.to_thread(open_card_key, steps[-1].module, steps[-1].token, card_pin())
    signature = await key.asign(b"after a pcscd restart")
    await asyncio.to_thread(key.close)
    assert len(signature) == 256
