"""``C_Login`` and ``C_Logout`` on a session that python-pkcs11 opened without a login.

python-pkcs11 0.10 logs in only inside ``Token.open``: when that login fails, the session it opened
is never closed, and ``Session.close`` calls ``C_Logout``, which logs out every other session of the
application. qsign therefore opens sessions without a PIN and calls the module's own exported
``C_Login``/``C_Logout`` through ctypes on that session handle. Loading the same path with ctypes
returns the already loaded library, so both see one module state. Call these under the module lock.
"""

from __future__ import annotations

import ctypes
import functools

import pkcs11.exceptions as p11

from token_drivers.module import Pkcs11Module
from token_drivers.softhsm import softhsm_login_lock

__all__ = ["CKU_SO", "CKU_USER", "CKU_CONTEXT_SPECIFIC", "c_login", "c_logout"]

CKU_SO = 0
CKU_USER = 1
CKU_CONTEXT_SPECIFIC = 2

# CK_RV values that a login can return, mapped to python-pkcs11's exception classes so that
# token_drivers.errors maps them like any other PKCS#11 failure.
_RV_ERRORS: dict[int, type[p11.PKCS11Error]] = {
    0x005: p11.GeneralError,
    0x006: p11.FunctionFailed,
    0x030: p11.DeviceError,
    0x031: p11.DeviceMemory,
    0x032: p11.DeviceRemoved,
    0x091: p11.OperationNotInitialized,
    0x0A0: p11.PinIncorrect,
    0x0A1: p11.PinInvalid,
    0x0A2: p11.PinLenRange,
    0x0A3: p11.PinExpired,
    0x0A4: p11.PinLocked,
    0x0B0: p11.SessionClosed,
    0x0B3: p11.SessionHandleInvalid,
    0x0E0: p11.TokenNotPresent,
    0x100: p11.UserAlreadyLoggedIn,
    0x101: p11.UserNotLoggedIn,
    0x102: p11.UserPinNotInitialized,
}


@functools.cache
def _cdll(path: str) -> ctypes.CDLL:
    library = ctypes.CDLL(path)
    library.C_Login.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong]
    library.C_Login.restype = ctypes.c_ulong
    library.C_Logout.argtypes = [ctypes.c_ulong]
    library.C_Logout.restype = ctypes.c_ulong
    return library


def _raise_for(rv: int) -> None:
    if rv == 0:
        return
    error_class = _RV_ERRORS.get(rv, p11.PKCS11Error)
    raise error_class(f"CKR 0x{rv:08x}")


def c_login(module: Pkcs11Module, session_handle: int, user_type: int, pin: str) -> None:
    """Log ``user_type`` in on the session with ``pin``; raises python-pkcs11 exceptions."""
    encoded = pin.encode("utf-8")
    with module.lock, softhsm_login_lock(module):
        rv = _cdll(module.lib.so).C_Login(session_handle, user_type, encoded, len(encoded))
    _raise_for(rv)


def c_logout(module: Pkcs11Module, session_handle: int) -> None:
    """Log the application out of the token of ``session_handle``; raises python-pkcs11 exceptions."""
    with module.lock:
        rv = _cdll(module.lib.so).C_Logout(session_handle)
    _raise_for(rv)
