"""Typed token errors with stable codes, and the mapping from PKCS#11 return values to them.

python-pkcs11 raises one exception class per ``CKR_*`` value; ``map_pkcs11_error`` turns those into
the errors below so that callers, the API and the tests match on ``code`` and never on a CKR name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pkcs11.exceptions as p11

from qsign.errors import QsignError
from qsign.i18n import N_

__all__ = [
    "TokenError",
    "ModuleLoadFailed",
    "PinIncorrect",
    "PinLocked",
    "PinExpired",
    "PinFinalTry",
    "PinRequired",
    "TokenNotPresent",
    "TokenAmbiguous",
    "DeviceRemoved",
    "SessionClosed",
    "KeyNotFound",
    "KeyAmbiguous",
    "CertificateNotFound",
    "MechanismInvalid",
    "UserNotLoggedIn",
    "Pkcs11Failure",
    "map_pkcs11_error",
    "pkcs11_errors",
]

_logger = logging.getLogger(__name__)


class TokenError(QsignError):
    """An error from a PKCS#11 module, token, session or key."""

    code = "token_error"
    message_template = N_("The token reported an error.")
    http_status = 502


class ModuleLoadFailed(TokenError):
    code = "module_load_failed"
    message_template = N_("The PKCS#11 module {module} could not be loaded: {reason}. "
                          "Check the path and that the module's package is installed.")
    http_status = 500


class PinIncorrect(TokenError):
    code = "pin_incorrect"
    message_template = N_("The PIN is incorrect. Check it and try again; "
                          "too many wrong PINs lock the token.")
    http_status = 401


class PinLocked(TokenError):
    code = "pin_locked"
    message_template = N_("The PIN of token {token} is locked. It must be unlocked with the "
                          "security officer's PIN (PUK) before the token can sign again.")
    http_status = 423


class PinExpired(TokenError):
    code = "pin_expired"
    message_template = N_("The PIN of token {token} has expired or must be changed before use. "
                          "Change it with the token's PIN tool.")
    http_status = 403


class PinFinalTry(TokenError):
    code = "pin_final_try"
    message_template = N_("Token {token} allows one more PIN attempt only; a wrong PIN now locks it. "
                          "qsign did not try the PIN. Repeat the request with the explicit "
                          "final-try confirmation if you are sure of the PIN.")
    http_status = 409


class PinRequired(TokenError):
    code = "pin_required"
    message_template = N_("A PIN is required. Enter it at the prompt, set QSIGN_PIN, or pass --pin-file.")
    http_status = 400


class TokenNotPresent(TokenError):
    code = "token_not_present"
    message_template = N_("No token {token} is present. Insert or tap the token and try again.")
    http_status = 404


class TokenAmbiguous(TokenError):
    code = "token_ambiguous"
    message_template = N_("More than one token is labelled {token}. Select the token by its serial number.")
    http_status = 409


class DeviceRemoved(TokenError):
    code = "device_removed"
    message_template = N_("The token was removed during the operation. Nothing was signed; "
                          "present the token again and retry.")
    http_status = 409


class SessionClosed(TokenError):
    code = "session_closed"
    message_template = N_("The session with the token was closed. Retry the operation.")
    http_status = 409


class KeyNotFound(TokenError):
    code = "key_not_found"
    message_template = N_("No private key {key} was found on token {token}. "
                          "List the keys with \"qsign tokens\".")
    http_status = 404


class KeyAmbiguous(TokenError):
    code = "key_ambiguous"
    message_template = N_("More than one private key is labelled {key} on token {token}. "
                          "Select the key by its CKA_ID.")
    http_status = 409


class CertificateNotFound(TokenError):
    code = "certificate_not_found"
    message_template = N_("No certificate matches key {key} on token {token}.")
    http_status = 404


class MechanismInvalid(TokenError):
    code = "mechanism_invalid"
    message_template = N_("The token does not support the mechanism {mechanism} for this key.")
    http_status = 400


class UserNotLoggedIn(TokenError):
    code = "user_not_logged_in"
    message_template = N_("The token refused the operation because the user is not logged in.")
    http_status = 401


class Pkcs11Failure(TokenError):
    code = "pkcs11_error"
    message_template = N_("The PKCS#11 call failed with {ckr}.")


# Order matters only where classes inherit from each other; python-pkcs11's do not.
_MAPPING: dict[type[Exception], type[TokenError]] = {
    p11.PinIncorrect: PinIncorrect,
    p11.PinLocked: PinLocked,
    p11.PinExpired: PinExpired,
    p11.TokenNotPresent: TokenNotPresent,
    p11.TokenNotRecognised: TokenNotPresent,
    p11.DeviceRemoved: DeviceRemoved,
    p11.SessionClosed: SessionClosed,
    p11.SessionHandleInvalid: SessionClosed,
    p11.NoSuchKey: KeyNotFound,
    p11.MultipleObjectsReturned: KeyAmbiguous,
    p11.NoSuchToken: TokenNotPresent,
    p11.MultipleTokensReturned: TokenAmbiguous,
    p11.MechanismInvalid: MechanismInvalid,
    p11.MechanismParamInvalid: MechanismInvalid,
    p11.UserNotLoggedIn: UserNotLoggedIn,
}


def map_pkcs11_error(error: Exception, **params: Any) -> TokenError:
    """Return the typed error for a python-pkcs11 exception.

    ``params`` fills the message placeholders (``token``, ``key``, ``mechanism``); missing ones are
    shown as ``?``. An unmapped ``CKR_*`` becomes ``pkcs11_error`` naming the exception class.
    """
    if isinstance(error, TokenError):
        return error

    for exception_class, error_class in _MAPPING.items():
        if isinstance(error, exception_class):
            filled = {name: params.get(name, "?") for name in ("token", "key", "mechanism")}
            ids = {k: v for k, v in params.items() if v is not None}
            return error_class(ids=ids, **filled)

    return Pkcs11Failure(ckr=type(error).__name__, ids={k: v for k, v in params.items() if v is not None})


@contextlib.contextmanager
def pkcs11_errors(**params: Any) -> Iterator[None]:
    """Re-raise python-pkcs11 exceptions raised in the block as typed ``TokenError``s."""
    try:
        yield
    except p11.PKCS11Error as error:
        mapped = map_pkcs11_error(error, **params)
        _logger.info("PKCS#11 call failed: %s -> %s %s", type(error).__name__, mapped.code, mapped.ids)
        raise mapped from error
