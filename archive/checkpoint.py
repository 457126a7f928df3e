"""Signed checkpoints of the audit log, and the signing of backup manifests.

A checkpoint is the canonical JSON ``{"type": "qsign.audit.checkpoint", "seq": N, "head_hash": H,
"signed_at": T}``, signed by the configured key. That key is ``archive.checkpoint_profile``, a token
profile opened through ``token_drivers.keys.open_profile_key``, or for development a PEM key file.
A checkpoint proves that entries 1..N existed with head hash H, so cutting the log's tail back
past N is detected. The
signer's certificate is stored with each signature. Verification checks the signature with it and,
when trust anchors are configured, that the certificate was issued through them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import Connection, insert, select

from archive.audit import canonical_json, utc_now
from archive.errors import Reason, SignerUnavailable
from qsign.i18n import N_
from archive.schema import audit_log, checkpoints
from archive.settings import ArchiveSettings
from qsign.config import Config

__all__ = ["Signer", "SoftwareSigner", "SignedPayload", "open_signer", "sign_payload", "signer_name",
           "verify_payload",
           "certificate_trust_problem", "write_checkpoint", "CHECKPOINT_TYPE"]

_logger = logging.getLogger(__name__)

CHECKPOINT_TYPE = "qsign.audit.checkpoint"
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class Signer(Protocol):
    """Any key that signs: a ``token_drivers.keys.TokenKey`` or a ``SoftwareSigner``."""

    certificate: asn1_x509.Certificate

    def sign(self, data: bytes, digest_algorithm: str = "sha256") -> bytes: ...


class SoftwareSigner:
    """A PEM private key in a file with its certificate; for development set-ups without a token."""

    def __init__(self, key_path: Path, certificate_path: Path) -> None:
        self._key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        der = x509.load_pem_x509_certificate(certificate_path.read_bytes()).public_bytes(
            serialization.Encoding.DER)
        self.certificate = asn1_x509.Certificate.load(der)
        self.key_label = key_path.name

    def sign(self, data: bytes, digest_algorithm: str = "sha256") -> bytes:
        algorithm = _HASHES[digest_algorithm]()
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), algorithm)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(algorithm))
        raise SignerUnavailable()

    def close(self) -> None:
        self._key = None


def open_signer(settings: ArchiveSettings, config: Config) -> Any | None:
    """Open the configured checkpoint signer, or return None when none is configured.

    The caller closes it with ``close()``. Token errors (PIN, token absent) propagate as
    ``TokenError`` subclasses.
    """
    if settings.checkpoint_key_file and settings.checkpoint_certificate:
        return SoftwareSigner(settings.checkpoint_key_file, settings.checkpoint_certificate)
    if not settings.checkpoint_profile:
        return None

    from token_drivers.keys import open_profile_key

    key = open_profile_key(config, settings.checkpoint_profile)
    _logger.info("opened checkpoint signing key of profile %s", settings.checkpoint_profile)
    return key


def _digest_for(signer: Signer) -> str:
    default = getattr(signer, "default_digest_algorithm", None)
    return default() if callable(default) else "sha256"


@dataclass(frozen=True)
class SignedPayload:
    """Bytes, their signature and the DER certificate that verifies it."""

    payload: bytes
    digest_algorithm: str
    signature: bytes
    certificate: bytes
    signer: str

    def to_json(self) -> dict[str, Any]:
        import base64

        return {
            "digest_algorithm": self.digest_algorithm,
            "signature": base64.b64encode(self.signature).decode(),
            "certificate": base64.b64encode(self.certificate).decode(),
            "signer": self.signer,
        }

    @classmethod
    def from_json(cls, payload: bytes, data: dict[str, Any]) -> SignedPayload:
        """Parse ``to_json`` output; raise ``ValueError`` unless it is exactly what ``to_json`` writes."""
        import base64

        signed = cls(payload=payload, digest_algorithm=str(data["digest_algorithm"]),
                     signature=base64.b64decode(data["signature"], validate=True),
                     certificate=base64.b64decode(data["certificate"], validate=True),
                     signer=str(data["signer"]))
        # Base64 has spare bits in its last character: insist on the one canonical text.
        if signed.to_json() != data:
            raise ValueError("signature data is not in canonical form")
        return signed


def signer_name(signer: Signer) -> str:
    """Return ``token/key`` labels of a token key, or the key file name of a ``SoftwareSigner``."""
    label = getattr(signer, "key_label", None) or "key"
    token = getattr(signer, "token_label", None)
    return f"{token}/{label}" if token else label


def sign_payload(signer: Signer, payload: bytes) -> SignedPayload:
    """Sign ``payload`` with ``signer`` and return it with the signer's certificate."""
    digest_algorithm = _digest_for(signer)
    signature = signer.sign(payload, digest_algorithm=digest_algorithm)
    return SignedPayload(payload=payload, digest_algorithm=digest_algorithm, signature=signature,
                         certificate=signer.certificate.dump(), signer=signer_name(signer))


def verify_payload(signed: SignedPayload) -> bool:
    """Return whether the signature over the payload verifies with the stored certificate."""
    try:
        certificate = x509.load_der_x509_certificate(signed.certificate)
        public_key = certificate.public_key()
        algorithm = _HASHES[signed.digest_algorithm]()
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signed.signature, signed.payload, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signed.signature, signed.payload, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError, KeyError):
        return False
    return True


def certificate_trust_problem(certificate_der: bytes, anchors: list[Path],
                              intermediates: list[Path]) -> Reason | None:
    """Return why the certificate does not chain to one of ``anchors``, or None when it does.

    Checks issuer signatures only (no validity period or revocation): a checkpoint stays provable
    after its signer's certificate expires.
    """
    def load(paths: list[Path]) -> list[x509.Certificate]:
        loaded = []
        for path in paths:
            if path.exists():
                loaded.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        return loaded

    trusted = load(anchors)
    pool = load(intermediates) + trusted
    try:
        current = x509.load_der_x509_certificate(certificate_der)
        current.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return Reason(N_("the certificate cannot be parsed"))

    for _depth in range(8):
        if any(current == anchor for anchor in trusted):
            return None
        issuer = next((candidate for candidate in pool if _issued_by(current, candidate)), None)
        if issuer is None:
            return Reason(N_("no configured trust anchor or intermediate issued {subject}"),
                          {"subject": current.subject.rfc4514_string()})
        if issuer in trusted:
            return None
        current = issuer
    return Reason(N_("the certificate chain is longer than 8 certificates"))


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def checkpoint_payload(seq: int, head_hash: str, signed_at: str) -> bytes:
    return canonical_json({"type": CHECKPOINT_TYPE, "seq": seq, "head_hash": head_hash,
                           "signed_at": signed_at}).encode("utf-8")


def write_checkpoint(connection: Connection, signer: Signer) -> tuple[int, str] | None:
    """Sign and store a checkpoint of the current head inside the caller's transaction.

    Returns ``(seq, head_hash)``, or None when the log is empty or the head is already checkpointed.
    """
    last = connection.execute(select(audit_log.c.seq, audit_log.c.hash)
                              .order_by(audit_log.c.seq.desc()).limit(1)).first()
    if last is None:
        return None
    if connection.execute(select(checkpoints.c.seq).where(checkpoints.c.seq == last.seq)).first():
        return None

    signed_at = utc_now()
    signed = sign_payload(signer, checkpoint_payload(last.seq, last.hash, signed_at))
    connection.execute(insert(checkpoints).values(
        seq=last.seq, head_hash=last.hash, signed_at=signed_at, payload=signed.payload,
        digest_algorithm=signed.digest_algorithm, signature=signed.signature,
        certificate=signed.certificate, signer=signed.signer))
    _logger.info("signed audit checkpoint at entry %d with %s", last.seq, signed.signer)
    return last.seq, last.hash


def parse_checkpoint_payload(payload: bytes) -> dict[str, Any] | None:
    """Return the fields of a checkpoint payload, or None when it is not one."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("type") != CHECKPOINT_TYPE:
        return None
    return data
