"""Sign-in for the web pages: argon2 password hashes, browser sessions and CSRF tokens.

A browser session is a device record in the archive, like a paired phone: the session cookie contains a
bearer token ``qs1.<device id>.<secret>`` of which only the SHA-256 is stored. A password sign-in
registers a device of kind ``web_login`` that expires after ``SESSION_LIFETIME``; a phone that pairs
through the web page keeps the device that the pairing code made. Revoking the device in the
administrator's devices page therefore signs the browser out at its next request.

Passwords live in ``<state>/agent/web-passwords.json`` (mode 0600): ``{"<user id>": "<argon2 hash>"}``.
The policy file says who a user is and which roles they have; this file only says how they sign in.

CSRF tokens are an HMAC-SHA256, under a key kept in ``<state>/agent/web-secret``, of the session cookie
(or, before sign-in, of a random ``qsign_anon`` cookie), so a form posted from another site, which cannot
read the cookies, cannot carry the matching token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from archive.api import Archive
from archive.records import DeviceRecord
from agent.pairing import TOKEN_PREFIX, authenticate, hash_secret

__all__ = ["PasswordStore", "WebSecret", "create_login_session", "session_device", "SESSION_LIFETIME",
           "WEB_LOGIN_KIND"]

_logger = logging.getLogger(__name__)

SESSION_LIFETIME = datetime.timedelta(hours=12)
WEB_LOGIN_KIND = "web_login"
MIN_PASSWORD_LENGTH = 8


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class PasswordStore:
    """Argon2id password hashes of web users, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hasher = PasswordHasher()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {str(user): str(value) for user, value in data.items()}

    def has_password(self, user_id: str) -> bool:
        return user_id in self._load()

    def set_password(self, user_id: str, password: str) -> None:
        """Store the argon2id hash of ``password`` for ``user_id``; the caller checks the length."""
        hashes = self._load()
        hashes[user_id] = self._hasher.hash(password)
        _write_private(self.path, json.dumps(hashes, indent=1, sort_keys=True).encode("utf-8"))
        _logger.info("web password set for user %s", user_id)

    def verify(self, user_id: str, password: str) -> bool:
        """Check ``password``; a user without a stored hash never matches (the hash is still computed)."""
        stored = self._load().get(user_id)
        if stored is None:
            # Spend the same time as a real check, so the response time does not tell which users exist.
            self._hasher.hash(password)
            return False
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        if self._hasher.check_needs_rehash(stored):
            self.set_password(user_id, password)
        return True


class WebSecret:
    """The HMAC key of CSRF tokens, made at first use and kept in the state dir."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            _write_private(path, secrets.token_bytes(32))
        self._key = path.read_bytes()

    def csrf_token(self, binding: str) -> str:
        return hmac.new(self._key, b"csrf:" + binding.encode("utf-8"), hashlib.sha256).hexdigest()

    def check_csrf(self, binding: str, token: str) -> bool:
        return bool(binding) and hmac.compare_digest(self.csrf_token(binding), token or "")


def create_login_session(archive: Archive, user_id: str, browser: str) -> str:
    """Register a ``web_login`` device for a password sign-in and return its session token."""
    device_id = "web-" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    expires_at = datetime.datetime.now(datetime.timezone.utc) + SESSION_LIFETIME
    with archive.transaction() as tx:
        tx.register_device(device_id, name=browser[:100] or "browser", owner=user_id,
                           token_hash=hash_secret(secret),
                           attributes={"kind": WEB_LOGIN_KIND, "expires_at": expires_at.isoformat()})
        tx.audit(f"user:{user_id}", "web.signed_in", device=device_id, object_ids={"user": user_id})
    _logger.info("user %s signed in on the web pages (device %s)", user_id, device_id)
    return f"{TOKEN_PREFIX}.{device_id}.{secret}"


def session_device(archive: Archive, cookie: str) -> DeviceRecord:
    """Return the device of a session cookie; raise ``unauthorized``, ``device_revoked`` or ``session_expired``."""
    from agent.web.errors import SessionExpired

    device = authenticate(archive, f"Bearer {cookie}")
    expires_at = device.attributes.get("expires_at")
    if device.attributes.get("kind") == WEB_LOGIN_KIND and expires_at:
        if datetime.datetime.fromisoformat(expires_at) <= datetime.datetime.now(datetime.timezone.utc):
            raise SessionExpired(ids={"device": device.id})
    return device
