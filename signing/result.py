"""The record that every signing function returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asn1crypto import x509

__all__ = ["SignResult", "signer_common_name"]


@dataclass(frozen=True)
class SignResult:
    """A signature that was made and written."""

    output: Path
    #: ``pades`` or ``cades``.
    format: str
    #: Signature field in the PDF; ``None`` for CAdES.
    field_name: str | None
    #: Signing time claimed by the signer (PDF /M or the CMS signing-time attribute), not a trusted time.
    signing_time: datetime
    digest_algorithm: str
    #: CMS signature algorithm, such as ``sha256_rsa``, ``rsassa_pss`` or ``sha384_ecdsa``.
    mechanism: str
    #: Common name of the signer's certificate.
    signer: str
    #: Size of the output file in bytes.
    size: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dictionary."""
        return {
            "output": str(self.output),
            "format": self.format,
            "field_name": self.field_name,
            "signing_time": self.signing_time.isoformat(),
            "digest_algorithm": self.digest_algorithm,
            "mechanism": self.mechanism,
            "signer": self.signer,
            "size": self.size,
        }


def signer_common_name(certificate: x509.Certificate) -> str:
    """Return the certificate subject's common name, else its organization name, else the whole subject."""
    subject = certificate.subject.native
    return subject.get("common_name") or subject.get("organization_name") or certificate.subject.human_friendly
