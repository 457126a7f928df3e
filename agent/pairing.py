"""Pairing phones with the agent, and the bearer tokens that paired devices send.

``qsign agent pair --user ID`` makes a one-time code and records a pending device for that user with
the code's SHA-256 and expiry. The phone POSTs the code and a device name. The agent checks that the
code is unused and unexpired, marks it used, and returns a bearer token ``qs1.<device id>.<secret>``.
Only the SHA-256 of the secret is stored. Codes and secrets come from ``secrets`` and carry 60 and 256
bits, so an unsalted SHA-256 is enough to keep them from being read back out of the database.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from archive.api import Archive
from archive.errors import RecordNotFound
from archive.records import DeviceRecord
from agent.errors import DeviceRevoked, PairingCodeExpired, PairingCodeInvalid, PairingCodeUsed, Unauthorized

__all__ = ["PairingCode", "PairedDevice", "create_pairing_code", "redeem_pairing_code", "authenticate",
           "revoke_device", "CODE_LIFETIME", "hash_secret"]

_logger = logging.getLogger(__name__)

CODE_LIFETIME = datetime.timedelta(minutes=10)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 12
TOKEN_PREFIX = "qs1"


@dataclass(frozen=True)
class PairingCode:
    code: str
    user: str
    device_id: str
    expires_at: datetime.datetime


@dataclass(frozen=True)
class PairedDevice:
    device_id: str
    user: str
    name: str
    #: The bearer token; returned to the phone once and never stored.
    token: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _normalize_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def create_pairing_code(archive: Archive, user: str, *, actor: str = "cli") -> PairingCode:
    """Make a one-time pairing code for ``user``, valid for ``CODE_LIFETIME``, and record it hashed."""
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    device_id = "dev-" + secrets.token_hex(8)
    expires_at = _now() + CODE_LIFETIME
    with archive.transaction() as tx:
        tx.register_device(device_id, name="", owner=user, token_hash=None, attributes={
            "pairing": {"code_hash": hash_secret(code), "expires_at": expires_at.isoformat(), "used_at": None}})
        tx.audit(actor, "pairing.code_created", device=device_id, object_ids={"user": user, "device": device_id})
    _logger.info("pairing code made for user %s (device %s)", user, device_id)
    return PairingCode(code=f"{code[:4]}-{code[4:8]}-{code[8:]}", user=user, device_id=device_id,
                       expires_at=expires_at)


def redeem_pairing_code(archive: Archive, code: str, device_name: str) -> PairedDevice:
    """Exchange an unused, unexpired code for a bearer token bound to the code's user.

    Raises ``pairing_code_invalid``, ``pairing_code_expired`` or ``pairing_code_used``; each failure is audited.
    """
    code_hash = hash_secret(_normalize_code(code))
    secret = secrets.token_urlsafe(32)
    with archive.transaction() as tx:
        device = next((d for d in tx.list_devices(include_revoked=True)
                       if hmac.compare_digest(str((d.attributes.get("pairing") or {}).get("code_hash", "")),
                                              code_hash)), None)
        failure = None
        if device is None:
            failure = PairingCodeInvalid()
        else:
            pairing = device.attributes["pairing"]
            if pairing.get("used_at") or device.revoked_at:
                failure = PairingCodeUsed(ids={"device": device.id})
            elif datetime.datetime.fromisoformat(pairing["expires_at"]) <= _now():
                failure = PairingCodeExpired(ids={"device": device.id})
        if failure is None:
            tx.update_device(device.id, name=device_name, token_hash=hash_secret(secret),
                             attributes={"pairing": {**pairing, "used_at": _now().isoformat()}})
            tx.audit(f"user:{device.owner}", "device.paired", device=device.id,
                     object_ids={"device": device.id, "user": device.owner})
    if failure is not None:
        archive.audit("anonymous", "device.pairing_failed", "failure", reason=failure.code,
                      device=failure.ids.get("device"))
        _logger.info("pairing failed: %s", failure.code)
        raise failure
    _logger.info("device %s paired for user %s", device.id, device.owner)
    return PairedDevice(device_id=device.id, user=str(device.owner), name=device_name,
                        token=f"{TOKEN_PREFIX}.{device.id}.{secret}")


def authenticate(archive: Archive, authorization: str | None) -> DeviceRecord:
    """Return the paired, unrevoked device of an ``Authorization: Bearer`` header value.

    Raises ``unauthorized`` for a missing or wrong token and ``device_revoked`` for a revoked device.
    """
    scheme, _, token = (authorization or "").partition(" ")
    parts = token.strip().split(".")
    if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise Unauthorized()
    _, device_id, secret = parts
    try:
        with archive.reading() as snapshot:
            device = snapshot.get_device(device_id)
    except RecordNotFound:
        raise Unauthorized() from None
    # Failures that name an existing device are audited; a token naming no device is only refused, so
    # that guessing cannot fill the audit log (device ids carry 64 random bits).
    if not device.token_hash or not hmac.compare_digest(device.token_hash, hash_secret(secret)):
        archive.audit(f"user:{device.owner}", "device.auth_failed", "failure", device=device_id, reason="unauthorized")
        raise Unauthorized(ids={"device": device_id})
    if device.revoked_at:
        archive.audit(f"user:{device.owner}", "device.auth_failed", "failure", device=device_id,
                      reason="device_revoked")
        raise DeviceRevoked(device=device_id, ids={"device": device_id})
    return device


def revoke_device(archive: Archive, device_id: str, *, actor: str = "cli") -> DeviceRecord:
    """Revoke a device so that its bearer token no longer works; raises ``record_not_found``."""
    with archive.transaction() as tx:
        tx.get_device(device_id)
        device = tx.update_device(device_id, revoked=True)
        tx.audit(actor, "device.revoked", device=device_id, object_ids={"device": device_id})
    _logger.info("device %s revoked", device_id)
    return device
