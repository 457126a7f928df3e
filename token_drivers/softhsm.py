"""A cross-process lock around SoftHSM2 logins.

SoftHSM2 2.6.1 rewrites the token's ``token.object`` file at every ``C_Login``. Measured on Debian 12:
with four processes opening a key on one token at the same moment, about 2 logins in 100 failed with
``CKR_GENERAL_ERROR``. Holding an ``flock`` on a file in the token directory around the login removes
the overlap. Other modules get no lock: on a smart card ``CKR_GENERAL_ERROR`` can mean a wrong PIN,
so qsign never retries a login instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from token_drivers.module import Pkcs11Module

__all__ = ["softhsm_login_lock"]

_TOKENDIR = re.compile(r"^\s*directories\.tokendir\s*=\s*(.+?)\s*$", re.MULTILINE)


def _token_dir() -> Path | None:
    config = os.environ.get("SOFTHSM2_CONF")
    if not config or not os.path.isfile(config):
        return None
    match = _TOKENDIR.search(Path(config).read_text(encoding="utf-8", errors="replace"))
    return Path(match.group(1)) if match else None


@contextlib.contextmanager
def softhsm_login_lock(module: Pkcs11Module) -> Iterator[None]:
    """Hold an exclusive lock shared by every process that logs in to this SoftHSM2 token directory."""
    token_dir = _token_dir() if "softhsm" in module.lib.manufacturer_id.lower() else None
    if token_dir is None or not token_dir.is_dir():
        yield
        return

    with open(token_dir / ".qsign-login.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
