"""The verification report: one record per signature, an overall verdict, and its JSON form.

The report keeps pyHanko's distinctions. A signature is *intact* when the message digest matches the
signed bytes, *valid* when the signature value verifies with the signer's public key, and *trusted* when a
certificate path leads to a trust anchor and the key usage is allowed. Each of these may be ``None`` when
it could not be determined, and an unknown value never yields the verdict "valid".

Each signature also carries an ETSI EN 319 102-1 indication (TOTAL_PASSED, INDETERMINATE, TOTAL_FAILED)
and sub-indication, derived from the same fields. The verdict of the whole file is an indication too: it is
``TOTAL_PASSED`` only when every signature is.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CertificateInfo",
    "FileInfo",
    "Indication",
    "PadesLevel",
    "CertificateRevocation",
    "PolicyInfo",
    "Report",
    "RevocationInfo",
    "RevocationSource",
    "RevocationStatus",
    "SignatureKind",
    "SignatureReport",
    "TimestampInfo",
    "TrustInfo",
    "overall_verdict",
]


class Indication(enum.StrEnum):
    """Main status indication of ETSI EN 319 102-1, clause 5.1.3."""

    TOTAL_PASSED = "TOTAL_PASSED"
    INDETERMINATE = "INDETERMINATE"
    TOTAL_FAILED = "TOTAL_FAILED"


class PadesLevel(enum.StrEnum):
    """PAdES baseline level that a signature reaches (ETSI EN 319 142-1)."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"


class SignatureKind(enum.StrEnum):
    PDF_SIGNATURE = "pdf_signature"
    DOCUMENT_TIMESTAMP = "document_timestamp"
    CMS_SIGNATURE = "cms_signature"


@dataclass(frozen=True)
class CertificateInfo:
    """A certificate as the report shows it; names are RFC 4514 strings with non-ASCII text kept."""

    subject: str
    issuer: str
    #: Serial number in lower-case hexadecimal.
    serial: str
    #: SHA-256 of the DER certificate, lower-case hexadecimal.
    sha256: str
    not_before: str
    not_after: str
    #: ``rsa``, ``ec``, ... and the key size in bits.
    key_algorithm: str | None = None
    key_bits: int | None = None


class RevocationStatus(enum.StrEnum):
    """Revocation status of a certificate at the time validation checked it."""

    #: The certificate names no CRL distribution point and no OCSP responder, so there is nothing to check.
    NOT_APPLICABLE = "not_applicable"
    GOOD = "good"
    REVOKED = "revoked"
    #: The certificate names a CRL or OCSP responder but no usable revocation data was available.
    UNKNOWN = "unknown"


class RevocationSource(enum.StrEnum):
    """Where the revocation data that decided a status came from."""

    #: The document security store (``/DSS``) of the PDF, the signature's adbe-revocationInfoArchival
    #: attribute, or the CRLs of a CMS SignedData.
    EMBEDDED = "embedded"
    #: Fetched from the certificate's CRL distribution point or OCSP responder (``--online``).
    ONLINE = "online"


@dataclass(frozen=True)
class CertificateRevocation:
    """The revocation check of one certificate of the signer's path (trust anchors are not checked)."""

    subject: str
    #: SHA-256 of the DER certificate, lower-case hexadecimal.
    sha256: str
    status: RevocationStatus
    source: RevocationSource | None
    #: Stable code of why the status is what it is, e.g. ``no_revocation_endpoint``,
    #: ``no_revocation_data_offline``; see the JSON schema for the list.
    reason: str
    #: Revocation time from the CRL or OCSP response, ISO 8601; only for ``revoked``.
    revocation_time: str | None = None


@dataclass
class RevocationInfo:
    """Revocation of the signer's certificate path: a summary status and one entry per certificate."""

    #: The worst status of the path: revoked, then unknown, then good, then not_applicable.
    status: RevocationStatus
    #: ``online`` when any entry was decided from fetched data, else ``embedded`` when any was decided
    #: from embedded data, else ``None``.
    source: RevocationSource | None
    #: Moment the revocation status applies to, ISO 8601: the validation time, or the time of the
    #: signature timestamp when the embedded data were checked at that time.
    checked_at: str | None
    certificates: list[CertificateRevocation] = field(default_factory=list)


@dataclass(frozen=True)
class TimestampInfo:
    """An RFC 3161 signature timestamp embedded in a signature, and its own validation result."""

    #: Time asserted by the TSA (genTime), ISO 8601.
    time: str | None
    tsa: str | None
    intact: bool
    valid: bool
    trusted: bool


@dataclass
class SignatureReport:
    """The validation result of one signature or document timestamp."""

    kind: SignatureKind
    #: Fully qualified name of the PDF signature field; ``None`` for CMS signatures.
    field: str | None
    #: Index of the PDF revision the signature covers (0 is the original document).
    revision: int | None
    signer: str | None = None
    signer_certificate: CertificateInfo | None = None
    #: Signing time claimed by the signer (signingTime attribute or /M), ISO 8601; not attested.
    signing_time: str | None = None
    #: For a document timestamp, the time asserted by the TSA, ISO 8601.
    timestamp_time: str | None = None
    timestamp: TimestampInfo | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    #: The message digest in the signature matches the digest of the signed bytes.
    intact: bool | None = None
    #: The signature value verifies with the public key of the signer's certificate.
    valid: bool | None = None
    #: A certificate path leads to a trust anchor and the key usage is allowed. ``None`` when the check did
    #: not run (the signature value does not verify) or could not decide (e.g. stale revocation data).
    trusted: bool | None = None
    #: Subject of the trust anchor that the certificate path ends in.
    trust_anchor: str | None = None
    #: Revocation status of the signer's certificate path; ``None`` when the signature was not validated.
    revocation: RevocationInfo | None = None
    #: pyHanko's SignatureCoverageLevel in lower case: entire_file, entire_revision,
    #: contiguous_block_from_start or unclear.
    coverage: str | None = None
    #: Bytes were appended after the signed revision; ``None`` when unknown.
    modified_after: bool | None = None
    #: pyHanko's ModificationLevel of what was appended, in lower case: none, lta_updates,
    #: form_filling, annotations, other; ``None`` when not analysed.
    modifications: str | None = None
    #: The modifications are allowed by the document's DocMDP policy; ``None`` when unknown.
    modifications_allowed: bool | None = None
    #: Objects that changed after the signed revision, as ``"<revision>: <description>"`` lines.
    changed_objects: list[str] = field(default_factory=list)
    #: PAdES baseline level reached (``B-B`` … ``B-LTA``); ``None`` for CMS signatures and failed ones.
    level: PadesLevel | None = None
    indication: Indication = Indication.INDETERMINATE
    #: ETSI sub-indication (e.g. HASH_FAILURE, NO_CERTIFICATE_CHAIN_FOUND), or ``None``.
    sub_indication: str | None = None
    #: Stable codes of every problem found, e.g. ``digest_mismatch``, ``no_certificate_chain_found``.
    errors: list[str] = field(default_factory=list)
    #: English detail from the validator for the problems above (not localized).
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileInfo:
    name: str
    #: SHA-256 of the whole file, lower-case hexadecimal.
    sha256: str
    #: Size in bytes.
    size: int


@dataclass(frozen=True)
class TrustInfo:
    """The trust anchors and the other certificates that validation used."""

    #: Origin of the anchors: ``arguments``, ``config`` or ``none``.
    source: str
    anchors: list[dict[str, str]]
    intermediates: list[dict[str, str]]
    #: Whether certificates and revocation data could be fetched over the network.
    online: bool
    #: pyhanko-certvalidator revocation mode, ``hard-fail``: a certificate that names a CRL or OCSP
    #: responder must have usable revocation data.
    revocation_mode: str


@dataclass(frozen=True)
class PolicyInfo:
    """The algorithm policy that validation applied."""

    name: str
    #: Digest algorithms refused anywhere in a signature or certificate path.
    weak_digest_algorithms: list[str]
    #: Smallest accepted RSA modulus, in bits.
    min_rsa_bits: int
    #: Smallest accepted EC key size, in bits.
    min_ec_bits: int


@dataclass
class Report:
    """The whole verification report of one file."""

    #: Identifier of the stored report (32 hexadecimal digits).
    id: str
    file: FileInfo
    #: ``pdf`` or ``cms``.
    format: str
    signatures: list[SignatureReport]
    validation_time: str
    trust: TrustInfo
    policy: PolicyInfo
    qsign_version: str
    #: The detached content a CMS signature was checked against.
    content: FileInfo | None = None
    #: Codes of problems with the file as a whole, e.g. ``no_signatures``.
    errors: list[str] = field(default_factory=list)
    #: What the qsign archive knows of this file (it signed it), or ``None``; set by the service.
    archive: dict[str, Any] | None = None
    #: Who asked for the validation (an auditor's name, or ``cli``); set by the caller.
    requested_by: str | None = None

    @property
    def verdict(self) -> Indication:
        return overall_verdict(self.signatures, self.errors)

    @property
    def sub_indication(self) -> str | None:
        """Sub-indication of the first signature that carries the verdict's indication."""
        verdict = self.verdict
        return next((signature.sub_indication for signature in self.signatures
                     if signature.indication is verdict and signature.sub_indication), None)

    @property
    def all_passed(self) -> bool:
        """Whether every signature is TOTAL_PASSED and nothing is unknown (exit code 0)."""
        return self.verdict is Indication.TOTAL_PASSED

    def to_dict(self) -> dict[str, Any]:
        """Return the report as the JSON object that the CLI prints and the HTTP API returns."""
        result: dict[str, Any] = {"verdict": str(self.verdict), "sub_indication": self.sub_indication}
        result.update(asdict(self))
        return _plain(result)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


def overall_verdict(signatures: list[SignatureReport], errors: list[str]) -> Indication:
    """Combine per-signature indications: TOTAL_FAILED if one failed, TOTAL_PASSED only if all passed.

    A file without signatures, or with a file-level error, is never TOTAL_PASSED.
    """
    indications = [signature.indication for signature in signatures]
    if Indication.TOTAL_FAILED in indications:
        return Indication.TOTAL_FAILED
    if not signatures or errors or Indication.INDETERMINATE in indications:
        return Indication.INDETERMINATE
    return Indication.TOTAL_PASSED


def _plain(value: Any) -> Any:
    """Convert enums inside ``asdict`` output to their string values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
