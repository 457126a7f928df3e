"""Finding a card's token again after PC/SC events, and opening its key without restarting the process.

A PKCS#11 module keeps its own view of readers and cards. OpenSC (0.23) notices a new card on the
next ``C_GetSlotList``, but after pcscd restarts its PC/SC context is dead until ``C_Finalize`` and
``C_Initialize``. ``find_reader_slot`` therefore looks for the reader's slot and, when the slot or its
token is missing, reinitialises the module once and looks again. A PC/SC reader is matched to its
PKCS#11 slot by name: OpenSC uses the reader name as the slot description.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pkcs11 as p11
from asn1crypto import x509 as asn1_x509
from pkcs11 import Attribute, ObjectClass

from qsign.i18n import N_
from token_drivers.errors import (DeviceRemoved, Pkcs11Failure, PinIncorrect, PinLocked, SessionClosed, TokenError,
                                  TokenNotPresent, pkcs11_errors)
from token_drivers.inventory import SlotInfo, list_slots
from token_drivers.keys import TokenKey, open_key
from token_drivers.module import Pkcs11Module, load_module
from token_drivers.pin import PinState

__all__ = ["CardToken", "CardKey", "CardLoginFailed", "find_reader_slot", "find_certificate_on_reader", "open_card_key",
           "certificate_der"]

_logger = logging.getLogger(__name__)


class CardLoginFailed(TokenError):
    """The card refused the login with an error that does not say whether the PIN was wrong."""

    code = "card_login_failed"
    message_template = N_("The card in reader {reader} refused the login ({ckr}). The PIN may be wrong; the "
                          "card does not report how many tries remain, so qsign did not try again. Check the "
                          "PIN before the next attempt, because a card locks after a few wrong PINs.")
    http_status = 401


@dataclass(frozen=True)
class CardToken:
    """The token in a reader's slot and, if found, the key that belongs to a given certificate."""

    reader: str
    slot_id: int
    token_label: str
    token_serial: str
    #: ``CKA_ID`` of the certificate that matched, ``None`` when the certificate is not on the token.
    key_id: bytes | None


def certificate_der(certificate: Any) -> bytes:
    """Return the DER bytes of an asn1crypto or cryptography certificate, or of DER bytes given as is."""
    if isinstance(certificate, (bytes, bytearray)):
        return bytes(certificate)
    if isinstance(certificate, asn1_x509.Certificate):
        return certificate.dump()
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.DER)


def _slot_of_reader(module: Pkcs11Module, reader: str) -> SlotInfo | None:
    for slot in list_slots(module):
        if slot.description == reader or slot.description.startswith(reader):
            return slot
    return None


def find_reader_slot(module: Pkcs11Module, reader: str) -> SlotInfo | None:
    """Return the slot of PC/SC reader ``reader`` with its token, reinitialising the module once if needed.

    Returns ``None`` when the module shows no token for the reader even after reinitialising.
    Reinitialising invalidates every open session of the module in this process.
    """
    with module.lock:
        try:
            slot = _slot_of_reader(module, reader)
        except TokenError as error:
            _logger.info("listing slots of %s failed (%s); reinitializing", module.path, error.code)
            slot = None
        if slot is not None and slot.token is not None:
            return slot

        # NOTE: with OpenSC 0.23 the tests never reach this line, because OpenSC finds new cards and a
        # restarted pcscd by itself. It is kept for modules that list slots at C_Initialize only.
        module.reinitialize()
        slot = _slot_of_reader(module, reader)
        return slot if slot is not None and slot.token is not None else None


def find_certificate_on_reader(module: Pkcs11Module, reader: str, certificate: Any) -> CardToken | None:
    """Look for ``certificate`` on the token in ``reader`` without logging in.

    Returns ``None`` when the reader has no token the module can read, else a ``CardToken`` whose
    ``key_id`` is the certificate's ``CKA_ID`` or ``None`` when the token contains only other certificates.
    """
    wanted = certificate_der(certificate)
    with module.lock:
        slot = find_reader_slot(module, reader)
        if slot is None or slot.token is None:
            return None

        with pkcs11_errors(token=slot.token.label):
            token = next(s for s in module.lib.get_slots(token_present=True) if s.slot_id == slot.slot_id).get_token()
            session = token.open(rw=False)
        try:
            key_id = None
            with pkcs11_errors(token=slot.token.label):
                for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
                    if obj[Attribute.VALUE] == wanted:
                        key_id = bytes(obj[Attribute.ID])
                        break
        finally:
            with pkcs11_errors(token=slot.token.label):
                session.close()
        return CardToken(reader=reader, slot_id=slot.slot_id, token_label=slot.token.label,
                         token_serial=slot.token.serial, key_id=key_id)


def _reclassify_login_failure(module: Pkcs11Module, card: CardToken, error: Pkcs11Failure) -> TokenError:
    """Turn CKR_GENERAL_ERROR from a card login into the most precise error the token allows."""
    try:
        with module.lock:
            slot = next((s for s in module.lib.get_slots(token_present=True) if s.slot_id == card.slot_id), None)
            if slot is None:
                return TokenNotPresent(token=card.token_label, ids={"token": card.token_label, "reader": card.reader})
            state = PinState.from_flags(int(slot.get_token().flags))
    except (p11.PKCS11Error, TokenError):
        return error

    ids = {"token": card.token_label, "reader": card.reader}
    if state.locked:
        return PinLocked(token=card.token_label, ids=ids)
    if state.count_low or state.final_try:
        return PinIncorrect(token=card.token_label, ids=ids)
    return CardLoginFailed(reader=card.reader, ckr=error.params.get("ckr", "?"), ids=ids)


#: How long to wait for pcscd to report a card gone after a failed command. pcscd 1.9 checks
#: serial readers such as vpcd for the card every 400 ms.
REMOVAL_SETTLE_SECONDS = 1.0


def _card_was_removed(reader: str) -> bool:
    """Return whether the card left ``reader``, waiting up to ``REMOVAL_SETTLE_SECONDS`` for pcscd to see it."""
    try:
        from token_drivers.pcsc import card_absent_within
    except ImportError:  # pyscard is not installed
        return False
    return card_absent_within(reader, REMOVAL_SETTLE_SECONDS)


class CardKey:
    """A ``TokenKey`` on a card, whose failures caused by pulling the card raise ``device_removed``.

    OpenSC 0.23 fails a signature whose card left mid-command with CKR_GENERAL_ERROR, and later
    calls with CKR_SESSION_HANDLE_INVALID, not CKR_DEVICE_REMOVED. After such an error this class asks
    pcscd whether the reader still holds a card and, if not, raises ``DeviceRemoved``. Every other
    attribute is the ``TokenKey``'s, so ``signing.TokenSigner`` accepts a ``CardKey``.
    """

    def __init__(self, key: TokenKey, module: Pkcs11Module, card: CardToken) -> None:
        self._key = key
        self._module = module
        self.card = card

    def __getattr__(self, name: str) -> Any:
        return getattr(self._key, name)

    def _removed_or(self, error: TokenError) -> TokenError:
        if isinstance(error, DeviceRemoved):
            return error
        if isinstance(error, (Pkcs11Failure, SessionClosed, TokenNotPresent)) and _card_was_removed(self.card.reader):
            _logger.info("card in %s was removed during the operation (%s)", self.card.reader, error.code)
            return DeviceRemoved(ids={"token": self.card.token_label, "reader": self.card.reader})
        return error

    def sign(self, data: bytes, **options: Any) -> bytes:
        try:
            return self._key.sign(data, **options)
        except TokenError as error:
            mapped = self._removed_or(error)
            if mapped is error:
                raise
            raise mapped from error

    async def asign(self, data: bytes, **options: Any) -> bytes:
        return await self._module.run(self.sign, data, **options)

    def close(self) -> None:
        self._key.close()

    def __enter__(self) -> CardKey:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_card_key(module_path: str, card: CardToken, pin: str, allow_final_try: bool = False) -> CardKey:
    """Log in to the card found by ``find_certificate_on_reader`` and return the certificate's key.

    Raises what ``open_key`` raises, except that CKR_GENERAL_ERROR becomes ``pin_incorrect`` or
    ``pin_locked`` when the token's PIN flags show a failed try, else ``card_login_failed``. It never
    retries the PIN.
    """
    if card.key_id is None:
        raise ValueError("open_card_key needs a CardToken whose certificate was found (key_id is None)")
    module = load_module(module_path)
    try:
        key = open_key(module_path, pin=pin, token_label=card.token_label, token_serial=card.token_serial or None,
                       key_id=card.key_id, allow_final_try=allow_final_try)
    except Pkcs11Failure as error:
        if error.params.get("ckr") != "GeneralError":
            raise
        # NOTE: open_key does not say which step failed. A CKR_GENERAL_ERROR after the token was
        # found is taken as the login's, since reading the token and opening a session worked.
        mapped = _reclassify_login_failure(module, card, error)
        _logger.info("login to the card in %s failed with CKR_GENERAL_ERROR; reported as %s", card.reader, mapped.code)
        raise mapped from error
    return CardKey(key, module, card)
