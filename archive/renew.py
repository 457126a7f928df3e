"""Renewal of archived PAdES files before their last timestamp's TSA certificate expires.

A B-LTA file stays verifiable only as long as its last document timestamp can be validated, which
ends when the TSA certificate of that timestamp expires. ``renew_due`` finds the archived signed
PDFs whose last document timestamp (or, without one, last signature timestamp) has a TSA
certificate that expires within the window. For each it fetches fresh revocation data for that
timestamp, adds them to the document security store and appends a new document timestamp
(pyHanko's ``PdfTimeStamper.async_update_archival_timestamp_chain``), as an incremental update that
leaves every earlier signature byte for byte as it was. The new version is stored as a new signed
document, and the audit log records ``document.ltv_renewed`` with both hashes.

A document already renewed (the previous hash of a ``document.ltv_renewed`` entry) is skipped,
because its newer version carries the chain on.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers.pdf_signer import PdfTimeStamper
from sqlalchemy import select

from archive.api import Archive, DocumentKind
from archive.audit import AuditOutcome
from archive.db import read_transaction
from archive.schema import audit_log, documents
from qsign.config import Config

__all__ = ["RenewalCandidate", "RenewalResult", "find_due", "renew_document", "renew_due", "RENEWED_ACTION"]

_logger = logging.getLogger(__name__)

RENEWED_ACTION = "document.ltv_renewed"


@dataclass(frozen=True)
class RenewalCandidate:
    """An archived PDF whose last timestamp's TSA certificate expires within the window."""

    sha256: str
    #: ``document`` (last document timestamp) or ``signature`` (a signature timestamp, no document timestamp).
    timestamp_kind: str
    tsa_not_after: datetime.datetime


@dataclass(frozen=True)
class RenewalResult:
    previous_sha256: str
    sha256: str
    tsa_not_after: datetime.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"previous_sha256": self.previous_sha256, "sha256": self.sha256,
                "tsa_not_after": self.tsa_not_after.isoformat()}


def _token_signer_certificate(signed_data: cms.SignedData) -> x509.Certificate | None:
    """Return the certificate of the signer of a time-stamp token's SignedData."""
    signer_id = signed_data["signer_infos"][0]["sid"].chosen
    for choice in signed_data["certificates"] or ():
        certificate = choice.chosen
        if not isinstance(certificate, x509.Certificate):
            continue
        if isinstance(signer_id, cms.IssuerAndSerialNumber):
            if (certificate.issuer == signer_id["issuer"]
                    and certificate.serial_number == signer_id["serial_number"].native):
                return certificate
        elif certificate.key_identifier == signer_id.native:
            return certificate
    return None


def last_timestamp_expiry(data: bytes) -> tuple[str, datetime.datetime] | None:
    """Return (kind, TSA certificate notAfter) of a PDF's last timestamp; ``None`` without any."""
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    document_timestamps = reader.embedded_timestamp_signatures
    if document_timestamps:
        certificate = _token_signer_certificate(document_timestamps[-1].signed_data)
        if certificate is not None:
            return "document", certificate.not_valid_after

    for signature in reversed(reader.embedded_regular_signatures):
        unsigned = signature.signer_info["unsigned_attrs"]
        for attribute in unsigned or ():
            if attribute["type"].native == "signature_time_stamp_token":
                certificate = _token_signer_certificate(attribute["values"][0]["content"])
                if certificate is not None:
                    return "signature", certificate.not_valid_after
    return None


def _renewed_hashes(archive: Archive) -> set[str]:
    with read_transaction(archive.engine) as connection:
        rows = connection.execute(select(audit_log.c.object_ids).where(
            audit_log.c.action == RENEWED_ACTION, audit_log.c.outcome == AuditOutcome.SUCCESS.value))
        hashes = set()
        for (object_ids,) in rows:
            value = object_ids if isinstance(object_ids, dict) else json.loads(object_ids or "{}")
            if value.get("previous_sha256"):
                hashes.add(value["previous_sha256"])
    return hashes


def find_due(archive: Archive, before_days: int, now: datetime.datetime | None = None) -> list[RenewalCandidate]:
    """Return the archived signed PDFs whose last timestamp's TSA certificate expires before now + window."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    deadline = now + datetime.timedelta(days=before_days)
    renewed = _renewed_hashes(archive)
    with read_transaction(archive.engine) as connection:
        hashes = [row[0] for row in connection.execute(
            select(documents.c.sha256).where(documents.c.pruned_at.is_(None),
                                             documents.c.kind == DocumentKind.SIGNED.value)
            .order_by(documents.c.stored_at))]

    due = []
    for sha256 in hashes:
        if sha256 in renewed:
            continue
        data = archive.read_document(sha256)
        if not data.startswith(b"%PDF-"):
            continue
        try:
            found = last_timestamp_expiry(data)
        except Exception as error:  # a damaged PDF must not stop the renewal of the others
            _logger.warning("cannot read the timestamps of archived document %s: %s", sha256, error)
            continue
        if found is not None and found[1] <= deadline:
            due.append(RenewalCandidate(sha256=sha256, timestamp_kind=found[0], tsa_not_after=found[1]))
    return due


def renew_document(archive: Archive, config: Config, sha256: str, *, actor: str) -> RenewalResult:
    """Add fresh validation data and a new document timestamp to one archived PDF and store the result.

    Raises ``TsaUnavailable``/``TsaResponseInvalid`` when the TSA fails and pyHanko's
    ``SigningError`` when the last timestamp cannot be validated; the archive is unchanged then.
    """
    from signing.levels import Level, level_settings

    settings = level_settings(Level.B_LTA, config)
    stamper = PdfTimeStamper(settings.timestamper)
    buffer = io.BytesIO(archive.read_document(sha256))
    asyncio.run(stamper.async_update_archival_timestamp_chain(PdfFileReader(buffer, strict=False),
                                                              settings.validation_context, in_place=True))
    renewed = buffer.getvalue()
    kind, not_after = last_timestamp_expiry(renewed) or ("document", datetime.datetime.max)

    stored = archive.store.write(renewed)
    with archive.transaction() as tx:
        previous = tx.get_document(sha256)
        record = tx.record_document(stored, DocumentKind.SIGNED, media_type="application/pdf",
                                    template_id=previous.template_id if previous else None,
                                    legal_hold=bool(previous and previous.legal_hold))
        tx.audit(actor, RENEWED_ACTION, object_ids={"previous_sha256": sha256, "sha256": record.sha256,
                                                    "tsa_not_after": not_after.isoformat()},
                 document_hashes=[sha256, record.sha256])
    _logger.info("renewed archived document %s -> %s (new timestamp's TSA valid until %s)", sha256,
                 record.sha256, not_after.isoformat())
    return RenewalResult(previous_sha256=sha256, sha256=record.sha256, tsa_not_after=not_after)


def renew_due(archive: Archive, config: Config, before_days: int, *, actor: str,
              now: datetime.datetime | None = None) -> tuple[list[RenewalResult], list[tuple[str, Exception]]]:
    """Renew every document ``find_due`` returns; return the renewals and the failures (hash, error).

    A failure is audited as ``document.ltv_renewed`` with outcome ``failure`` and does not stop the others.
    """
    results, failures = [], []
    for candidate in find_due(archive, before_days, now):
        try:
            results.append(renew_document(archive, config, candidate.sha256, actor=actor))
        except Exception as error:
            _logger.error("renewal of archived document %s failed: %s", candidate.sha256, error)
            archive.audit(actor, RENEWED_ACTION, AuditOutcome.FAILURE, object_ids={"previous_sha256": candidate.sha256},
                          reason=f"{type(error).__name__}: {error}"[:500], document_hashes=[candidate.sha256])
            failures.append((candidate.sha256, error))
    return results, failures
