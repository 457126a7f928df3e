"""Waiting for the token that holds the signer's key.

A ``TokenSource`` reports when the signer's token is present. ``Pkcs11TokenSource`` asks the PKCS#11
module (through ``token_drivers``) and, while the token is absent, asks again every
``RECHECK_SECONDS`` after re-initialising the module, because SoftHSM2 and some smart-card modules
list only the tokens they saw at ``C_Initialize``. A source driven by PC/SC card events can replace it
without changes to the workflow: it only has to implement ``wait_for_token``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from qsign.config import TokenProfile
from token_drivers.errors import TokenNotPresent
from token_drivers.keys import find_token
from token_drivers.module import load_module

from agent.errors import TokenWaitTimedOut

__all__ = ["TokenSource", "Pkcs11TokenSource", "RECHECK_SECONDS"]

_logger = logging.getLogger(__name__)

RECHECK_SECONDS = 0.25


class TokenSource(Protocol):
    async def wait_for_token(self, profile: TokenProfile, timeout: float,
                             on_waiting: Callable[[], Awaitable[None]]) -> None:
        """Return once the profile's token is present; call ``on_waiting`` once if it is not present at first.

        Raises ``token_wait_timeout`` when it does not appear within ``timeout`` seconds.
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

    async def wait_for_token(self, profile: TokenProfile, timeout: float,
                             on_waiting: Callable[[], Awaitable[None]]) -> None:
        module = load_module(profile.module)
        if await module.run(self._present, profile, False):
            return

        await on_waiting()
        _logger.info("waiting up to %.0f s for token %s", timeout, profile.token_label)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(RECHECK_SECONDS)
            if await module.run(self._present, profile, True):
                _logger.info("token %s is present", profile.token_label)
                return
        raise TokenWaitTimedOut(token=profile.token_label, seconds=f"{timeout:g}",
                                ids={"token": profile.token_label})
