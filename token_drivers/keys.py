"""Opening a signing key on a token and signing with it.

``open_key`` finds the token and the private key, checks the PIN flags, logs in, and returns a
``TokenKey``. ``TokenKey.sign`` signs one message: for a key with ``CKA_ALWAYS_AUTHENTICATE`` it does a
context-specific login between ``C_SignInit`` and ``C_Sign`` for every signature, as PKCS#11 requires.
Every call holds the module lock.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asn1crypto import x509
from pkcs11 import Attribute, ObjectClass, Mechanism
import pkcs11.exceptions as p11

from qsign.config import Config, TokenProfile
from token_drivers.errors import (CertificateNotFound, DeviceRemoved, KeyAmbiguous, KeyNotFound,
                                  SessionClosed, TokenAmbiguous, TokenNotPresent, pkcs11_errors)
from token_drivers.inventory import (KeyInfo, describe_token, pair_certificate,
                                     public_key_fingerprint, _attribute, _key_shape, _read_certificates)
from token_drivers.login import CKU_USER, c_login, c_logout
from token_drivers.mechanisms import plan_signature
from token_drivers.module import Pkcs11Module, load_module
from token_drivers.pin import PinState, check_pin_state, read_pin

__all__ = ["TokenKey", "find_token", "find_token_rescanning", "open_key", "open_profile_key"]

_logger = logging.getLogger(__name__)


def find_token(module: Pkcs11Module, token_label: str | None = None,
               token_serial: str | None = None) -> Any:
    """Return the python-pkcs11 token with this label and/or serial (call under the module lock).

    Raises ``TokenNotPresent`` when none matches and ``TokenAmbiguous`` when several do.
    """
    requested = token_label or token_serial or "?"
    with pkcs11_errors(token=requested):
        tokens = []
        for slot in module.lib.get_slots(token_present=True):
            try:
                token = slot.get_token()
            except (p11.TokenNotPresent, p11.TokenNotRecognised, p11.DeviceRemoved):
                continue
            except p11.GeneralError:
                # SoftHSM2 2.6.1 keeps listing the slot of a token deleted since C_Initialize, and
                # C_GetTokenInfo on that slot returns CKR_GENERAL_ERROR.
                _logger.info("slot %s: reading the token failed with CKR_GENERAL_ERROR; skipped", slot.slot_id)
                continue
            info = describe_token(token)
            if token_label is not None and info.label != token_label:
                continue
            if token_serial is not None and info.serial != token_serial:
                continue
            tokens.append(token)

    if not tokens:
        raise TokenNotPresent(token=requested, ids={"token": requested, "module": module.path})
    if len(tokens) > 1:
        raise TokenAmbiguous(token=requested, ids={"token": requested, "module": module.path})
    return tokens[0]


class TokenKey:
    """A private key in a logged-in session, ready to sign. Close it (or use ``with``) when done.

    The PIN stays in memory while the key is open: a ``CKA_ALWAYS_AUTHENTICATE`` key needs it for every
    signature, and any key needs it to log in again after another session's ``C_Logout``.
    """

    def __init__(self, module: Pkcs11Module, token: Any, session: Any, private_key: Any, info: KeyInfo,
                 pin: str, allow_final_try: bool) -> None:
        self.module = module
        self._token = token
        self._session = session
        self._private_key = private_key
        self.info = info
        self._pin = pin
        self._allow_final_try = allow_final_try
        with module.lock, pkcs11_errors(token=self.token_label):
            self.mechanisms: set[Mechanism] = set(token.slot.get_mechanisms())

    token_label = property(lambda self: self._token.label.strip())
    key_label = property(lambda self: self.info.label)
    key_id = property(lambda self: bytes.fromhex(self.info.id))
    key_type = property(lambda self: self.info.type)
    bits = property(lambda self: self.info.bits)
    curve = property(lambda self: self.info.curve)
    always_authenticate = property(lambda self: bool(self.info.always_authenticate))

    @property
    def certificate(self) -> x509.Certificate:
        """The key's certificate from the token; raises ``CertificateNotFound`` if none was paired."""
        if self.info.certificate is None:
            raise CertificateNotFound(key=self.key_label, token=self.token_label,
                                      ids={"token": self.token_label, "key": self.key_label})
        return self.info.certificate.certificate

    def default_digest_algorithm(self) -> str:
        """SHA-384 for P-384 keys, SHA-512 for P-521, SHA-256 otherwise."""
        return {"secp384r1": "sha384", "secp521r1": "sha512"}.get(self.curve or "", "sha256")

    def sign(self, data: bytes, *, digest_algorithm: str | None = None, pss: bool = False) -> bytes:
        """Sign ``data`` (the whole message, not a digest) and return the signature as CMS carries it.

        RSA returns the PKCS#1 v1.5 or PSS signature; EC returns a DER ECDSA-Sig-Value. Raises
        ``TokenError`` subclasses, e.g. ``device_removed`` when the token goes away.
        """
        digest_algorithm = digest_algorithm or self.default_digest_algorithm()
        ids = {"token": self.token_label, "key": self.key_label}
        if self._session is None:
            # A closed key must not reach the module: its old session handle may belong to another
            # session by now, and its PIN is gone.
            raise SessionClosed(ids=ids)
        plan = plan_signature(self.key_type, self.mechanisms, digest_algorithm, pss)
        payload = plan.prepare(data)

        with self.module.lock, pkcs11_errors(**ids, mechanism=plan.name):
            if self.always_authenticate:
                self._check_pin_state()
            try:
                raw = self._sign_once(plan, payload)
            except p11.UserNotLoggedIn:
                if self.always_authenticate:
                    raise
                # Another session logged the application out; log in again once.
                _logger.info("token %s: user not logged in, logging in again", self.token_label)
                self._check_pin_state()
                c_login(self.module, self._session.handle, CKU_USER, self._pin)
                raw = self._sign_once(plan, payload)
            except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid) as error:
                self._find_key_again(ids, error)
                raw = self._sign_once(plan, payload)

        _logger.debug("signed with key %s on token %s using %s", self.key_label, self.token_label, plan.name)
        return plan.finish(raw)

    async def asign(self, data: bytes, *, digest_algorithm: str | None = None, pss: bool = False) -> bytes:
        """``sign`` from asyncio code, in the module's worker thread."""
        return await self.module.run(self.sign, data, digest_algorithm=digest_algorithm, pss=pss)

    def _sign_once(self, plan: Any, payload: bytes) -> bytes:
        pin = self._pin if self.always_authenticate else None
        return self._private_key.sign(payload, mechanism=plan.mechanism,
                                      mechanism_param=plan.mechanism_param, pin=pin)

    def _find_key_again(self, ids: dict[str, str], error: Exception) -> None:
        """Look the private key up again after the module rejected its handle.

        SoftHSM2 2.6.1 returns ``CKR_OBJECT_HANDLE_INVALID`` in two cases. Its token was deleted
        under the open session: this raises ``device_removed``. Or ``C_Logout`` invalidated the
        handles of all private objects, which happens when ``open_key`` opens another key of this
        process on the same token. In that case the key is found again by label and ``CKA_ID`` after
        a login, and ``key_not_found`` means the key object itself was deleted.
        """
        try:
            current = describe_token(self._token.slot.get_token())
        except p11.PKCS11Error as probe_error:
            _logger.info("token %s no longer responds: %s", self.token_label, type(probe_error).__name__)
            raise DeviceRemoved(ids=ids) from error
        if current.serial != describe_token(self._token).serial:
            raise DeviceRemoved(ids=ids) from error

        _logger.info("token %s: the handle of key %s is no longer valid; finding the key again",
                     self.token_label, self.key_label)
        self._check_pin_state()
        try:
            c_login(self.module, self._session.handle, CKU_USER, self._pin)
        except p11.UserAlreadyLoggedIn:
            pass
        self._private_key = _find_private_key(self._session, self.token_label, self.key_label or None,
                                              self.key_id or None)

    def _check_pin_state(self) -> None:
        token = self._token.slot.get_token()
        check_pin_state(PinState.from_flags(int(token.flags)), self.token_label, self._allow_final_try)

    def close(self) -> None:
        """Close the session and forget the PIN."""
        self._pin = ""
        if self._session is None:
            return
        with self.module.lock:
            try:
                self._session.close()
            except p11.PKCS11Error as error:
                _logger.info("closing session on token %s failed: %s", self.token_label, type(error).__name__)
            self.module.open_sessions -= 1
        self._session = None

    def __enter__(self) -> TokenKey:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TokenKey(token={self.token_label!r}, key={self.key_label!r}, type={self.key_type!r})"


def _find_private_key(session: Any, token_label: str, key_label: str | None, key_id: bytes | None) -> Any:
    template: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if key_label is not None:
        template[Attribute.LABEL] = key_label
    if key_id is not None:
        template[Attribute.ID] = key_id
    if key_label is not None:
        requested = key_label
    elif key_id:
        requested = key_id.hex()
    else:
        requested = "?"
    ids = {"token": token_label, "key": requested}

    with pkcs11_errors(**ids):
        found = list(session.get_objects(template))
    if not found:
        raise KeyNotFound(key=requested, token=token_label, ids=ids)
    if len(found) > 1:
        raise KeyAmbiguous(key=requested, token=token_label, ids=ids)
    return found[0]


def _login(module: Pkcs11Module, session: Any, pin: str, token_label: str) -> None:
    try:
        c_login(module, session.handle, CKU_USER, pin)
    except p11.UserAlreadyLoggedIn:
        # Another session of this process is logged in. Log out and in again so this PIN is checked
        # too; keys opened earlier log in again with their own PIN when they next sign.
        _logger.info("token %s: already logged in; logging in again to check this PIN", token_label)
        c_logout(module, session.handle)
        c_login(module, session.handle, CKU_USER, pin)


def open_key(module_path: str, *, pin: str, token_label: str | None = None, token_serial: str | None = None,
             key_label: str | None = None, key_id: bytes | None = None,
             allow_final_try: bool = False) -> TokenKey:
    """Open a session on the token, log in with ``pin`` and return the key, ready to sign.

    The PIN flags are read first: a locked PIN raises ``pin_locked``, and the final try raises
    ``pin_final_try`` unless ``allow_final_try`` is true. Raises ``token_not_present``,
    ``token_ambiguous``, ``key_not_found``, ``key_ambiguous``, ``pin_incorrect`` and other
    ``TokenError`` codes.
    """
    module = load_module(module_path)
    with module.lock:
        token = find_token_rescanning(module, token_label, token_serial)
        label = token.label.strip()
        ids = {"token": label, "key": key_label or (key_id.hex() if key_id else None)}
        check_pin_state(PinState.from_flags(int(token.flags)), label, allow_final_try)

        with pkcs11_errors(**ids):
            session = token.open(rw=False)
        try:
            with pkcs11_errors(**ids):
                _login(module, session, pin, label)
            private_key = _find_private_key(session, label, key_label, key_id)
            info = _describe_private_key(session, private_key)
        except BaseException:
            with pkcs11_errors(**ids):
                session.close()
            raise

        module.open_sessions += 1

    _logger.info("opened key %s on token %s (%s)", info.label, label, info.type)
    return TokenKey(module, token, session, private_key, info, pin, allow_final_try)


#: Slot scans ``open_key`` makes before it reports ``token_not_present``.
FIND_TOKEN_ATTEMPTS = 3


def find_token_rescanning(module: Pkcs11Module, token_label: str | None, token_serial: str | None) -> Any:
    """Run ``find_token``; while the token is missing and no session is open, reinitialise and look again.

    Measured with SoftHSM2 2.6.1 on Debian 12: four processes opening a key on one token at the same
    moment failed with ``token_not_present`` in about 15 of 100 opens, and a rescan after
    ``C_Finalize``/``C_Initialize`` found the token every time (SoftHSM2 rewrites ``token.object`` at
    each login, so a process that scans the token directory then can skip the token). A token that is
    really absent still fails, after ``FIND_TOKEN_ATTEMPTS`` scans about 0.1 s apart. Call under the lock.
    """
    for attempt in range(1, FIND_TOKEN_ATTEMPTS + 1):
        try:
            return find_token(module, token_label, token_serial)
        except TokenNotPresent:
            if attempt == FIND_TOKEN_ATTEMPTS or module.open_sessions:
                raise
            _logger.info("token %s not found (scan %d); reinitialising the module to scan again",
                         token_label or token_serial, attempt)
            time.sleep(0.1)
            module.reinitialize()


def _describe_private_key(session: Any, private_key: Any) -> KeyInfo:
    key_id = _attribute(private_key, Attribute.ID, b"") or b""
    label = _attribute(private_key, Attribute.LABEL, "") or ""
    key_type, bits, curve = _key_shape(private_key)

    fingerprint = public_key_fingerprint(private_key)
    if fingerprint is None:
        for public in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id}):
            fingerprint = public_key_fingerprint(public)
            break
    certificate, paired_by = pair_certificate(key_id, fingerprint, _read_certificates(session))
    if key_type == "ec" and curve is None and certificate is not None:
        curve = certificate.certificate.public_key["algorithm"]["parameters"].chosen.native

    return KeyInfo(label=label, id=key_id.hex(), type=key_type, bits=bits, curve=curve,
                   always_authenticate=bool(_attribute(private_key, Attribute.ALWAYS_AUTHENTICATE, False)),
                   certificate=certificate, paired_by=paired_by, source="private_key")


def open_profile_key(config: Config, profile_name: str, pin: str | None = None,
                     allow_final_try: bool = False) -> TokenKey:
    """Open the key of ``[tokens.<profile_name>]``; without ``pin`` it comes from the profile's source."""
    from qsign.errors import ConfigError

    profile: TokenProfile | None = config.tokens.get(profile_name)
    if profile is None:
        raise ConfigError(detail=f"no [tokens.{profile_name}] in {config.path}")
    if pin is None:
        pin = read_pin(profile.pin_file, pin_env=profile.pin_env or "QSIGN_PIN", interactive=False)
    return open_key(profile.module, pin=pin, token_label=profile.token_label, key_label=profile.key_label,
                    allow_final_try=allow_final_try)
