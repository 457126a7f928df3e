"""The result of ``qsign softhsm init``: what exists now and what this run changed."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softhsm_setup.files import Status

__all__ = ["TokenResult", "KeyResult", "CertificateResult", "InitReport"]


@dataclass(frozen=True)
class TokenResult:
    label: str
    serial: str
    pin_file: Path
    so_pin_file: Path
    #: Whether the token's PINs are the published test PINs of ``softhsm_setup.specs``.
    uses_test_pins: bool
    status: Status


@dataclass(frozen=True)
class KeyResult:
    token_label: str
    label: str
    #: ``rsa`` or ``ec``, as ``TokenKey.key_type`` spells it.
    key_type: str
    bits: int | None
    curve: str | None
    key_id: bytes
    always_authenticate: bool
    status: Status


@dataclass(frozen=True)
class CertificateResult:
    #: ``root-ca``, ``intermediate-ca``, ``officer`` or ``seal``.
    role: str
    #: Token that contains the certificate object, or ``None`` for the CAs, which exist only as files.
    token_label: str | None
    #: Label of the key (and of the certificate object); the file stem for the CAs.
    label: str
    subject: str
    issuer: str
    serial_number: int
    not_after: datetime.datetime
    path: Path
    #: For a token certificate, what happened to the certificate object on the token.
    status: Status


@dataclass
class InitReport:
    """Everything ``init_state`` made or found in one state dir."""

    state_dir: Path
    module_path: str
    softhsm_conf: Path
    config_path: Path
    config_status: Status
    tokens: list[TokenResult] = field(default_factory=list)
    keys: list[KeyResult] = field(default_factory=list)
    certificates: list[CertificateResult] = field(default_factory=list)
    #: Every file this run created or rewrote, in the order written.
    files_written: list[Path] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether this run created or rewrote anything."""
        statuses = [self.config_status]
        statuses += [item.status for item in (*self.tokens, *self.keys, *self.certificates)]
        return bool(self.files_written) or any(status is not Status.EXISTS for status in statuses)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (paths as strings, ``CKA_ID`` as hex)."""
        return {
            "state_dir": str(self.state_dir),
            "module": self.module_path,
            "softhsm_conf": str(self.softhsm_conf),
            "config": {"path": str(self.config_path), "status": self.config_status.value},
            "changed": self.changed,
            "files_written": [str(path) for path in self.files_written],
            "tokens": [
                {"label": token.label, "serial": token.serial, "pin_file": str(token.pin_file),
                 "so_pin_file": str(token.so_pin_file), "uses_test_pins": token.uses_test_pins,
                 "status": token.status.value}
                for token in self.tokens
            ],
            "keys": [
                {"token": key.token_label, "label": key.label, "key_type": key.key_type, "bits": key.bits,
                 "curve": key.curve, "key_id": key.key_id.hex(), "always_authenticate": key.always_authenticate,
                 "status": key.status.value}
                for key in self.keys
            ],
            "certificates": [
                {"role": certificate.role, "token": certificate.token_label, "label": certificate.label,
                 "subject": certificate.subject, "issuer": certificate.issuer,
                 "serial_number": format(certificate.serial_number, "x"),
                 "not_after": certificate.not_after.isoformat(), "path": str(certificate.path),
                 "status": certificate.status.value}
                for certificate in self.certificates
            ],
        }
