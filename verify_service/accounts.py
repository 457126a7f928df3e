"""Auditor accounts of the verification service: password login (argon2id hashes) and API tokens.

Accounts live in ``<state>/verify_service/accounts.json`` (mode 0600), written atomically under a lock
file. Passwords are stored as argon2id hashes; an API token is shown once when created and stored as its
SHA-256 only. A token reads ``qv_<id>_<secret>``: the id finds the record, the secret is compared in
constant time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from verify_service.errors import AccountExists, AccountNameInvalid, AccountNotFound, LoginFailed

__all__ = ["AUDITOR_ROLE", "Account", "AccountStore"]

_logger = logging.getLogger(__name__)

AUDITOR_ROLE = "auditor"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOKEN_PATTERN = re.compile(r"^qv_([0-9a-f]{16})_([A-Za-z0-9_-]{20,})$")
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_at: str
    tokens: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class AccountStore:
    """The auditor accounts of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "verify_service"
        self.path = self.directory / "accounts.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"users": {}, "tokens": {}}
        data.setdefault("users", {})
        data.setdefault("tokens", {})
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Yield the accounts for change, and write them back atomically when the block ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "accounts.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            temporary = self.path.with_suffix(".tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)

    def has_accounts(self) -> bool:
        return bool(self._read()["users"])

    def add_user(self, name: str, password: str, role: str = AUDITOR_ROLE) -> Account:
        """Create an account; raise ``AccountNameInvalid`` or ``AccountExists``."""
        if not _NAME_PATTERN.match(name):
            raise AccountNameInvalid(name=name)
        password_hash = _HASHER.hash(password)
        with self._locked() as data:
            if name in data["users"]:
                raise AccountExists(ids={"user": name}, name=name)
            data["users"][name] = {"role": role, "password_hash": password_hash, "created_at": _now()}
        _logger.info("auditor account %s created (role %s)", name, role)
        return Account(name=name, role=role, created_at=data["users"][name]["created_at"], tokens=0)

    def list_users(self) -> list[Account]:
        data = self._read()
        token_counts: dict[str, int] = {}
        for token in data["tokens"].values():
            token_counts[token["user"]] = token_counts.get(token["user"], 0) + 1
        return [Account(name=name, role=user["role"], created_at=user["created_at"],
                        tokens=token_counts.get(name, 0)) for name, user in sorted(data["users"].items())]

    def check_password(self, name: str, password: str) -> Account:
        """Return the account when the password matches; raise ``LoginFailed`` otherwise."""
        user = self._read()["users"].get(name)
        if user is None:
            # Hash anyway, so that the response time does not reveal which names exist.
            with contextlib.suppress(VerificationError):
                _HASHER.verify(_HASHER.hash("x"), "y")
            raise LoginFailed(ids={"user": name})
        try:
            _HASHER.verify(user["password_hash"], password)
        except (VerificationError, InvalidHashError) as exc:
            raise LoginFailed(ids={"user": name}) from exc
        return Account(name=name, role=user["role"], created_at=user["created_at"], tokens=0)

    def create_token(self, name: str, label: str = "") -> str:
        """Create an API token for an account and return it; it cannot be shown again."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with self._locked() as data:
            if name not in data["users"]:
                raise AccountNotFound(ids={"user": name}, name=name)
            data["tokens"][token_id] = {"user": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                                        "label": label, "created_at": _now()}
        _logger.info("API token %s created for %s", token_id, name)
        return f"qv_{token_id}_{secret}"

    def check_token(self, token: str) -> Account | None:
        """Return the account of a valid API token, or ``None``."""
        match = _TOKEN_PATTERN.match(token)
        if match is None:
            return None
        data = self._read()
        record = data["tokens"].get(match.group(1))
        if record is None:
            return None
        digest = hashlib.sha256(match.group(2).encode()).hexdigest()
        if not hmac.compare_digest(digest, record["sha256"]):
            return None
        user = data["users"].get(record["user"])
        if user is None:
            return None
        return Account(name=record["user"], role=user["role"], created_at=user["created_at"], tokens=0)
