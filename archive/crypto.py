"""Encryption at rest: an AES-256-GCM envelope per stored file, with a wrapped data key.

Each file gets a fresh 256-bit data key and 96-bit nonce. The data key is wrapped (AES key wrap,
RFC 3394) by a key-encryption key (KEK) from one of two providers:

- ``KeyFileKek``: 32 bytes in a file, for development; wrapping happens in this process.
- ``Pkcs11Kek``: an AES-256 secret key on a PKCS#11 token with ``CKA_EXTRACTABLE`` false and
  ``CKA_SENSITIVE`` true. ``C_WrapKey`` and ``C_UnwrapKey`` with ``CKM_AES_KEY_WRAP`` run on the
  token, so the KEK never leaves it.

File layout (all integers big-endian)::

    "QSIGNAE1" | u16 len | KEK id (UTF-8) | u16 len | wrapped data key | nonce (12) | ciphertext | tag (16)

Everything before the ciphertext is the GCM associated data, so a changed KEK id or wrapped key
fails the tag like a changed ciphertext byte. Decryption writes plaintext only to a place the caller
discards unless ``finish`` succeeds, so a file whose tag fails is reported as corrupt and never returned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from archive.errors import DocumentCorrupt, KeyEncryptionKeyUnavailable, Reason
from qsign.i18n import N_

__all__ = ["KeyEncryptionKey", "KeyFileKek", "Pkcs11Kek", "EnvelopeWriter", "EnvelopeReader",
           "MAGIC", "is_envelope"]

_logger = logging.getLogger(__name__)

MAGIC = b"QSIGNAE1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_DATA_KEY_BYTES = 32
CHUNK_BYTES = 1 << 20


class KeyEncryptionKey(Protocol):
    """Interface of a key-encryption key provider, as the document store uses it."""

    #: Identifier written into each file; names the key, reveals nothing of it.
    key_id: str

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """Return the data key; raise ``InvalidUnwrap`` when ``wrapped`` was not made by this KEK."""
        ...

    def close(self) -> None: ...


class KeyFileKek:
    """A KEK read from a file of exactly 32 bytes (development only: the key sits on disk)."""

    def __init__(self, path: Path, create: bool = False) -> None:
        if not path.exists():
            if not create:
                raise KeyEncryptionKeyUnavailable(
                    reason=Reason(N_("key file {path} does not exist"), {"path": str(path)}),
                    ids={"path": str(path)})
            _create_key_file(path)
        key = path.read_bytes()
        if len(key) != _DATA_KEY_BYTES:
            raise KeyEncryptionKeyUnavailable(
                reason=Reason(N_("key file {path} must hold exactly 32 bytes"), {"path": str(path)}),
                ids={"path": str(path)})
        self._key = key
        self.key_id = "file:" + hashlib.sha256(b"qsign archive kek id\0" + key).hexdigest()[:16]

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        return aes_key_unwrap(self._key, wrapped)

    def close(self) -> None:
        self._key = b""


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(os.urandom(_DATA_KEY_BYTES))
        handle.flush()
        os.fsync(handle.fileno())
    _logger.info("created archive key-encryption key file %s", path)


class Pkcs11Kek:
    """A non-extractable AES-256 KEK on a PKCS#11 token; wrap and unwrap run on the token.

    The session is opened without a PIN and logged in with ``C_Login`` (``token_drivers.login``), like
    ``token_drivers.keys``. The PIN stays in memory while the KEK is open, because ``C_Logout`` from
    another session of this process on the same token logs this one out too. A call that meets a lost
    login logs in again once. Every call holds the module lock.
    """

    def __init__(self, module_path: str, token_label: str, key_label: str, pin: str,
                 create: bool = False) -> None:
        import pkcs11
        import pkcs11.exceptions as p11

        from token_drivers.errors import pkcs11_errors
        from token_drivers.keys import find_token_rescanning
        from token_drivers.module import load_module
        from token_drivers.pin import PinState, check_pin_state

        self._pkcs11 = pkcs11
        self._p11 = p11
        self._module = load_module(module_path)
        self._pin = pin
        self._error_params = {"token": token_label, "key": key_label}
        self.key_id = f"pkcs11:{token_label}/{key_label}"

        with self._module.lock, pkcs11_errors(**self._error_params):
            token = find_token_rescanning(self._module, token_label, None)
            check_pin_state(PinState.from_flags(int(token.flags)), token_label, allow_final_try=False)
            self._session = token.open(rw=True)
            try:
                self._login()
                self._key = self._find_or_create(key_label, create)
            except BaseException:
                self._session.close()
                raise
            self._module.open_sessions += 1

    def _login(self) -> None:
        from token_drivers.login import CKU_USER, c_login

        try:
            c_login(self._module, self._session.handle, CKU_USER, self._pin)
        except self._p11.UserAlreadyLoggedIn:
            # Another session of this process logged in; PKCS#11 shares the login per application.
            pass

    def _find_or_create(self, key_label: str, create: bool):
        pkcs11 = self._pkcs11
        try:
            key = self._session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY,
                                        key_type=pkcs11.KeyType.AES, label=key_label)
        except self._p11.NoSuchKey:
            if not create:
                raise KeyEncryptionKeyUnavailable(
                    reason=Reason(N_("no AES key {key} on token {token} (set archive.kek_create = true to "
                                     "create it)"), dict(self._error_params)), ids=self._error_params) from None
            key = self._generate(key_label)

        if key[pkcs11.Attribute.EXTRACTABLE] or not key[pkcs11.Attribute.SENSITIVE]:
            raise KeyEncryptionKeyUnavailable(
                reason=Reason(N_("AES key {key} on token {token} is extractable or not sensitive; create a "
                                 "non-extractable key"), dict(self._error_params)), ids=self._error_params)
        return key

    def _generate(self, key_label: str):
        attribute = self._pkcs11.Attribute
        key = self._session.generate_key(
            self._pkcs11.KeyType.AES, 256, label=key_label, store=True,
            template={attribute.EXTRACTABLE: False, attribute.SENSITIVE: True, attribute.PRIVATE: True,
                      attribute.WRAP: True, attribute.UNWRAP: True, attribute.ENCRYPT: False,
                      attribute.DECRYPT: False, attribute.SIGN: False, attribute.VERIFY: False})
        _logger.info("created non-extractable archive KEK %s", self.key_id)
        return key

    def _call(self, function):
        """Run ``function`` under the module lock, recovering once from a lost login.

        After another session's ``C_Logout`` this session is logged out too and the handles of private
        objects become invalid, so log in again, find the key again by its label, and retry.
        """
        from token_drivers.errors import pkcs11_errors

        p11 = self._p11
        lost = (p11.UserNotLoggedIn, p11.KeyHandleInvalid, p11.ObjectHandleInvalid,
                p11.WrappingKeyHandleInvalid, p11.UnwrappingKeyHandleInvalid)
        with self._module.lock, pkcs11_errors(**self._error_params):
            try:
                return function()
            except lost as error:
                _logger.info("token %s: %s, logging in and finding key %s again", self._error_params["token"],
                             type(error).__name__, self._error_params["key"])
                self._login()
                self._key = self._find_or_create(self._error_params["key"], create=False)
                return function()

    def wrap(self, data_key: bytes) -> bytes:
        attribute = self._pkcs11.Attribute

        def wrap_on_token() -> bytes:
            # The data key must be an object on the token to be wrapped there: a session object that
            # is destroyed at once.
            data_key_object = self._session.create_object({
                attribute.CLASS: self._pkcs11.ObjectClass.SECRET_KEY,
                attribute.KEY_TYPE: self._pkcs11.KeyType.AES,
                attribute.VALUE: data_key, attribute.TOKEN: False,
                attribute.EXTRACTABLE: True, attribute.SENSITIVE: False,
            })
            try:
                return self._key.wrap_key(data_key_object, mechanism=self._pkcs11.Mechanism.AES_KEY_WRAP)
            finally:
                data_key_object.destroy()

        return self._call(wrap_on_token)

    def unwrap(self, wrapped: bytes) -> bytes:
        attribute = self._pkcs11.Attribute
        p11 = self._p11

        def unwrap_on_token() -> bytes:
            try:
                data_key_object = self._key.unwrap_key(
                    self._pkcs11.ObjectClass.SECRET_KEY, self._pkcs11.KeyType.AES, wrapped,
                    mechanism=self._pkcs11.Mechanism.AES_KEY_WRAP, store=False,
                    template={attribute.EXTRACTABLE: True, attribute.SENSITIVE: False})
            except (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.EncryptedDataInvalid,
                    p11.EncryptedDataLenRange, p11.GeneralError) as error:
                # NOTE: SoftHSM2 2.6.1 returns CKR_GENERAL_ERROR when the RFC 3394 integrity check fails
                # (wrong KEK or changed wrapped key). A real device fault here is therefore reported as
                # a corrupt document too, and only the log line keeps the PKCS#11 error.
                _logger.info("unwrapping a data key on token %s failed: %s", self._error_params["token"],
                             type(error).__name__)
                raise InvalidUnwrap() from error
            try:
                return bytes(data_key_object[attribute.VALUE])
            finally:
                data_key_object.destroy()

        return self._call(unwrap_on_token)

    def close(self) -> None:
        self._pin = ""
        with self._module.lock:
            try:
                self._session.close()
            except self._p11.PKCS11Error as error:
                _logger.info("closing the KEK session on token %s failed: %s", self._error_params["token"],
                             type(error).__name__)
            self._module.open_sessions -= 1


def _header(kek_id: str, wrapped: bytes, nonce: bytes) -> bytes:
    kek_id_bytes = kek_id.encode("utf-8")
    return (MAGIC + struct.pack(">H", len(kek_id_bytes)) + kek_id_bytes
            + struct.pack(">H", len(wrapped)) + wrapped + nonce)


def is_envelope(path: Path) -> bool:
    """Return whether the file at ``path`` starts like an encrypted envelope."""
    with path.open("rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


class EnvelopeWriter:
    """Encrypt a stream into ``output``: call ``write`` per chunk of plaintext, then ``finish`` once."""

    def __init__(self, output: BinaryIO, kek: KeyEncryptionKey) -> None:
        data_key = os.urandom(_DATA_KEY_BYTES)
        nonce = os.urandom(_NONCE_BYTES)
        header = _header(kek.key_id, kek.wrap(data_key), nonce)
        self._encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(header)
        self._output = output
        self._output.write(header)

    def write(self, plaintext: bytes) -> None:
        self._output.write(self._encryptor.update(plaintext))

    def finish(self) -> None:
        self._output.write(self._encryptor.finalize())
        self._output.write(self._encryptor.tag)


class EnvelopeReader:
    """Decrypt an envelope file chunk by chunk; ``finish`` checks the tag.

    A caller must discard every chunk it received unless ``finish`` returns. Raises
    ``DocumentCorrupt`` (with ``sha256`` for the message) when the header is malformed, the data key
    does not unwrap with ``kek`` or the tag fails.
    """

    def __init__(self, path: Path, kek: KeyEncryptionKey, sha256: str) -> None:
        self._sha256 = sha256
        self._handle = path.open("rb")
        try:
            header = self._read_header(kek)
        except BaseException:
            self._handle.close()
            raise
        total = os.fstat(self._handle.fileno()).st_size
        self._remaining = total - self._handle.tell() - _TAG_BYTES
        if self._remaining < 0:
            self._handle.close()
            raise self._corrupt(N_("file is shorter than its header and tag"))
        self._decryptor = Cipher(algorithms.AES(self._data_key), modes.GCM(self._nonce)).decryptor()
        self._decryptor.authenticate_additional_data(header)

    def _corrupt(self, reason: str, **args: str) -> DocumentCorrupt:
        return DocumentCorrupt(sha256=self._sha256, reason=Reason(reason, args), ids={"sha256": self._sha256})

    def _read_exact(self, count: int) -> bytes:
        data = self._handle.read(count)
        if len(data) != count:
            raise self._corrupt(N_("truncated header"))
        return data

    def _read_header(self, kek: KeyEncryptionKey) -> bytes:
        magic = self._read_exact(len(MAGIC))
        if magic != MAGIC:
            raise self._corrupt(N_("not an encrypted archive file"))
        (id_length,) = struct.unpack(">H", self._read_exact(2))
        kek_id = self._read_exact(id_length).decode("utf-8", errors="replace")
        (wrapped_length,) = struct.unpack(">H", self._read_exact(2))
        wrapped = self._read_exact(wrapped_length)
        self._nonce = self._read_exact(_NONCE_BYTES)
        try:
            self._data_key = kek.unwrap(wrapped)
        except InvalidUnwrap:
            if kek_id != kek.key_id:
                raise self._corrupt(N_("the data key does not unwrap with the configured key-encryption key "
                                       "(the file names key {key})"), key=kek_id) from None
            raise self._corrupt(N_("the data key does not unwrap with the configured key-encryption key")) from None
        return _header(kek_id, wrapped, self._nonce)

    def chunks(self):
        """Yield the plaintext in chunks of at most 1 MiB (unauthenticated until ``finish``)."""
        while self._remaining > 0:
            data = self._handle.read(min(CHUNK_BYTES, self._remaining))
            if not data:
                raise self._corrupt(N_("file ended early"))
            self._remaining -= len(data)
            yield self._decryptor.update(data)

    def finish(self) -> None:
        """Check the tag; raise ``DocumentCorrupt`` if it fails."""
        tag = self._handle.read(_TAG_BYTES)
        try:
            self._decryptor.finalize_with_tag(tag)
        except (InvalidTag, ValueError):
            raise self._corrupt(N_("authentication tag mismatch")) from None
        finally:
            self._handle.close()

    def close(self) -> None:
        self._handle.close()
