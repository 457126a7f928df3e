"""Loading PKCS#11 modules, and the one lock per module that serialises every call into it.

python-pkcs11 calls ``C_Initialize`` without ``CKF_OS_LOCKING_OK``, so the module does no locking of
its own. Measured on Debian 12 with SoftHSM2 2.6.1: two threads signing at once in one process ended in
a segfault, an abort or a hang in about 19 runs in 20. Every call into a module therefore runs under
``Pkcs11Module.lock``; asyncio code reaches the module through ``Pkcs11Module.run``, which uses a
single worker thread that also takes the lock. To use more cores, use more processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pkcs11

from token_drivers.errors import ModuleLoadFailed, pkcs11_errors

__all__ = ["Pkcs11Module", "load_module", "SOFTHSM_MODULE_CANDIDATES", "OPENSC_MODULE_CANDIDATES",
           "find_installed_module"]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
OPENSC_MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
    "/usr/local/lib/opensc-pkcs11.so",
)


def find_installed_module(candidates: tuple[str, ...]) -> str | None:
    """Return the first of ``candidates`` that exists on this machine."""
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return None


class Pkcs11Module:
    """A loaded PKCS#11 module with its lock. Obtain instances with ``load_module``."""

    def __init__(self, path: str, lib: pkcs11.lib) -> None:
        self.path = path
        self.lib = lib
        #: Held around every call into the module. Re-entrant, so a helper that holds it may call
        #: another that takes it again.
        self.lock = threading.RLock()
        #: Sessions that qsign code opened on this module and has not closed yet; ``reinitialize`` would
        #: invalidate them. Change it under ``lock``.
        self.open_sessions = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"Pkcs11Module({self.path!r})"

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` under the module lock and return its result."""
        with self.lock:
            return function(*args, **kwargs)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` under the module lock in the module's worker thread."""
        with self._executor_guard:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"pkcs11-{Path(self.path).stem}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.call, function, *args, **kwargs))

    def reinitialize(self) -> None:
        """Finalize and initialize the module again, so it enumerates slots and tokens afresh.

        Every session and object handle of this module becomes invalid. Used after a reader or card
        event, because some modules list the slots they saw at ``C_Initialize`` only.
        """
        with self.lock, pkcs11_errors():
            _logger.info("reinitializing PKCS#11 module %s", self.path)
            self.lib.reinitialize()


_loaded: dict[str, Pkcs11Module] = {}
_loaded_guard = threading.Lock()


#: Directories searched for a module given by file name only, as Debian installs them.
MODULE_DIRECTORIES = tuple(f"/usr/lib/{arch}-linux-gnu{suffix}" for arch in ("x86_64", "aarch64")
                           for suffix in ("", "/pkcs11")) + ("/usr/lib", "/usr/lib/softhsm", "/usr/local/lib")


def resolve_module_path(path: str | os.PathLike[str]) -> str:
    """Return ``path``, or for a bare file name such as ``opensc-pkcs11.so`` the first match in
    ``MODULE_DIRECTORIES``; a name found nowhere is returned unchanged."""
    text = os.fspath(path)
    if os.sep in text or os.path.exists(text):
        return text
    for directory in MODULE_DIRECTORIES:
        candidate = os.path.join(directory, text)
        if os.path.isfile(candidate):
            return candidate
    return text


def load_module(path: str | os.PathLike[str]) -> Pkcs11Module:
    """Load the PKCS#11 module at ``path`` once per process and return it.

    A bare file name is looked up in ``MODULE_DIRECTORIES``. Raises ``ModuleLoadFailed`` when the file
    is missing or is not a PKCS#11 module.
    """
    resolved = os.path.realpath(resolve_module_path(path))
    with _loaded_guard:
        module = _loaded.get(resolved)
        if module is not None:
            return module

        if not os.path.isfile(resolved):
            raise ModuleLoadFailed(module=str(path), reason="no such file", ids={"module": str(path)})
        try:
            lib = pkcs11.lib(resolved)
        except (RuntimeError, OSError, pkcs11.PKCS11Error) as error:
            raise ModuleLoadFailed(module=str(path), reason=str(error) or type(error).__name__,
                                   ids={"module": str(path)}) from error

        module = Pkcs11Module(str(path), lib)
        _loaded[resolved] = module
        _logger.info("loaded PKCS#11 module %s (%s)", path, lib.library_description)
        return module
