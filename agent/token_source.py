"""Waiting for the token that holds the signer's key.

A ``TokenSource`` reports when the signer's token is present. ``Pkcs11TokenSource`` asks the PKCS#11
module (through ``token_drivers``) and, while the token is absent, asks again every
``RECHECK_SECONDS`` after re-initialising the module, because SoftHSM2 and some smart-card modules
list only the tokens they saw at ``C_Initialize``. ``agent.card_source.CardTokenSource`` is driven by
PC/SC card events instead. A source reports the steps of the wait through ``report`` and returns a
``PresentToken``, which opens the key on the token it found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from qsign.config import TokenProfile
from token_drivers.errors import TokenNotPresent
from token_drivers.keys import TokenKey, find_token
from token_drivers.module import load_module

from agent.errors import TokenWaitTimedOut
from agent.events import EventState
from agent.signer import open_signer_key

__all__ = ["TokenSource", "Pkcs11TokenSource", "PresentToken", "WaitReporter", "RECHECK_SECONDS"]

_logger = logging.getLogger(__name__)

RECHECK_SECONDS = 0.25


#: Publishes one step of the wait on the request's event stream: the state and the event's fields.
WaitReporter = Callable[[EventState, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class PresentToken:
    """The token a wait found: the fields of the ``token_present`` event and how to open its key."""

    opener: Callable[[str, bool], Awaitable[TokenKey]]
    details: dict[str, Any] = field(default_factory=dict)

    async def open_key(self, pin: str, allow_final_try: bool) -> TokenKey:
        """Log in with ``pin`` and return the signer's key; raises what the token's login raises."""
        return await self.opener(pin, allow_final_try)


class TokenSource(Protocol):
    async def wait_for_token(self, profile: TokenProfile, timeout: float, report: WaitReporter) -> PresentToken:
        """Return the profile's token once it is present, reporting the steps of the wait through ``report``.

        ``report(EventState.WAITING_FOR_TOKEN, ...)`` comes once, when the token is not present at first
        (a source may also send it when it is). Raises ``token_wait_timeout`` when the token does not
        appear within ``timeout`` seconds.
        """


class Pkcs11TokenSource:
    """Presence of a token by label, read from the PKCS#11 module's slot list."""

    def _present(self, profile: TokenProfile, reinitialize: bool) -> bool:
        module = load_module(profile.module)
        with module.lock:
            if reinitialize:
                # NOTE: this invalidates every session of the module in this process. The agent signs
                # one request at a time and holds no other sessions on it; an archive key on the same
                # module would have to log in again.
                module.reinitialize()
            try:
                find_token(module, profile.token_label)
            except TokenNotPresent:
                return False
        return True

    async def wait_for_token(self, profile: TokenProfile, timeout: float, report: WaitReporter) -> PresentToken:
        async def opener(pin: str, allow_final_try: bool) -> TokenKey:
            return await open_signer_key(profile, pin, allow_final_try)

        present = PresentToken(opener, {"token": profile.token_label})
        module = load_module(profile.module)
        if await module.run(self._present, profile, False):
            return present

        await report(EventState.WAITING_FOR_TOKEN, {"token": profile.token_label})
        _logger.info("waiting up to %.0f s for token %s", timeout, profile.token_label)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(RECHECK_SECONDS)
            if await module.run(self._present, profile, True):
                _logger.info("token %s is present", profile.token_label)
                return present
        raise TokenWaitTimedOut(token=profile.token_label, seconds=f"{timeout:g}",
                                ids={"token": profile.token_label})
