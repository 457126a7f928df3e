"""PIN state from the token's flags, the final-try guard, and where a command's PIN comes from.

A PIN is never logged, stored, echoed or put in an error message. It lives in memory only while the
key that needs it is open.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pkcs11 import TokenFlag

from qsign.i18n import translate
from token_drivers.errors import PinExpired, PinFinalTry, PinLocked, PinRequired

__all__ = ["PinState", "check_pin_state", "read_pin", "PIN_ENV"]

_logger = logging.getLogger(__name__)

#: Environment variable a command reads the PIN from when no ``--pin-file`` is given.
PIN_ENV = "QSIGN_PIN"


@dataclass(frozen=True)
class PinState:
    """The user PIN flags of a token (``CKF_USER_PIN_*`` of ``CK_TOKEN_INFO``)."""

    count_low: bool
    final_try: bool
    locked: bool
    to_be_changed: bool

    @classmethod
    def from_flags(cls, flags: int) -> PinState:
        return cls(
            count_low=bool(flags & TokenFlag.USER_PIN_COUNT_LOW),
            final_try=bool(flags & TokenFlag.USER_PIN_FINAL_TRY),
            locked=bool(flags & TokenFlag.USER_PIN_LOCKED),
            to_be_changed=bool(flags & TokenFlag.USER_PIN_TO_BE_CHANGED),
        )

    def as_dict(self) -> dict[str, bool]:
        return {"count_low": self.count_low, "final_try": self.final_try,
                "locked": self.locked, "to_be_changed": self.to_be_changed}


def check_pin_state(state: PinState, token_label: str, allow_final_try: bool) -> None:
    """Raise unless a login may be attempted now.

    A locked PIN raises ``PinLocked``. On the final try ``PinFinalTry`` is raised unless the caller
    passes ``allow_final_try``, because a wrong PIN then locks the token. A PIN that must be changed
    raises ``PinExpired``.
    """
    if state.locked:
        raise PinLocked(token=token_label, ids={"token": token_label})
    if state.to_be_changed:
        raise PinExpired(token=token_label, ids={"token": token_label})
    if state.final_try and not allow_final_try:
        raise PinFinalTry(token=token_label, ids={"token": token_label})
    if state.count_low:
        _logger.warning("token %s: a wrong PIN was entered before; attempts are running low", token_label)


def read_pin(pin_file: str | os.PathLike[str] | None = None, *, pin_env: str = PIN_ENV,
             prompt_language: str = "en", interactive: bool | None = None) -> str:
    """Return the PIN from ``pin_file``, else the ``pin_env`` variable, else a prompt on the terminal.

    The prompt is used only when stdin is a terminal (or ``interactive`` is true). Raises
    ``PinRequired`` when there is no source. Trailing newlines of the file are removed.
    """
    if pin_file is not None:
        text = Path(pin_file).read_text(encoding="utf-8")
        pin = text.splitlines()[0] if text else ""
        if pin:
            return pin

    from_env = os.environ.get(pin_env)
    if from_env:
        return from_env

    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        pin = getpass.getpass(translate("PIN: ", prompt_language))
        if pin:
            return pin

    raise PinRequired()
