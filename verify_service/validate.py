"""Validate every signature of a PDF, or of a CMS signature file, with pyHanko, and build the report.

``verify_file`` is the entry point for the CLI and the HTTP service. It reads nothing but the given files
and the trust settings; with ``TrustSettings.online`` false (the default) it opens no network connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from asn1crypto import cms, core, pem, x509
from pyhanko.pdf_utils import misc
from pyhanko.pdf_utils.crypt import AuthStatus
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESIndeterminate
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import (
    async_validate_cms_signature,
    async_validate_detached_cms,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.generic_cms import collect_timing_info
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureStatus, StandardCMSSignatureStatus
from pyhanko_certvalidator import ValidationContext

from qsign import __version__
from verify_service.assessment import (
    report_from_cms_status,
    report_from_pdf_status,
    report_from_timestamp_status,
    report_from_unreadable,
)
from verify_service.errors import CmsMalformed, ContentNotExpected, ContentRequired, PdfEncrypted, PdfMalformed
from verify_service.form_fields import fields_changed_since
from verify_service.inputs import InputFile, InputFormat, inspect_content, inspect_input
from verify_service.levels import assign_pades_levels
from verify_service.policy import AlgorithmPolicy
from verify_service.report import (
    Indication,
    Report,
    RevocationInfo,
    RevocationStatus,
    SignatureKind,
    SignatureReport,
    TrustInfo,
)
from verify_service.revocation import (
    REVOCATION_DATA_MISSING,
    EmbeddedRevocationData,
    assess_revocation,
    dss_revocation_data,
    signed_data_revocation_data,
)
from verify_service.trust import TrustSettings, describe_certificate

__all__ = ["averify_file", "verify_file"]

_logger = logging.getLogger(__name__)

#: pyHanko's own tolerance between the validation time and the times in revocation data and certificates.
DEFAULT_TIME_TOLERANCE = timedelta(seconds=1)
#: Tolerance when revocation data is fetched online: the validation time is taken before the fetch, and
#: on a loaded 2-core machine fresh OCSP responses came more than 1 s later ("OCSP response is too recent").
FETCH_TIME_TOLERANCE = timedelta(minutes=2)

#: Errors that asn1crypto and pyHanko raise on structures they cannot parse.
#: RecursionError: object-stream loops and circular page trees make some readers recurse without end.
_PARSE_ERRORS = (misc.PdfError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


def verify_file(path: str | os.PathLike[str], content: str | os.PathLike[str] | None = None,
                trust: TrustSettings = TrustSettings(), *, name: str | None = None,
                content_name: str | None = None, policy: AlgorithmPolicy = AlgorithmPolicy(),
                at: datetime | None = None) -> Report:
    """Validate every signature in a PDF, or the signature(s) of a CMS file, and return the report.

    ``content`` is the signed file of a detached CMS signature. ``name`` and ``content_name`` are the file
    names the report shows (default: the paths' last parts). ``at`` is the validation time (timezone-aware;
    default: now). Runs its own event loop, so call it from a thread that has none (use ``averify_file``
    inside a running loop). Runs in the calling process: ``verify_service.sandbox`` isolates it.

    Raises a ``verify_service.errors`` error (``InvalidInput``) when no report can be made: missing,
    empty or unreadable input, a detached CMS without its content, an encrypted PDF.
    """
    return asyncio.run(averify_file(path, content, trust, name=name, content_name=content_name, policy=policy,
                                    at=at))


async def averify_file(path: str | os.PathLike[str], content: str | os.PathLike[str] | None = None,
                       trust: TrustSettings = TrustSettings(), *, name: str | None = None,
                       content_name: str | None = None, policy: AlgorithmPolicy = AlgorithmPolicy(),
                       at: datetime | None = None) -> Report:
    """Do what ``verify_file`` does, in the running event loop (the pyHanko calls are CPU-bound)."""
    document = inspect_input(path, name)
    content_file = inspect_content(content, content_name) if content is not None else None
    if document.format is InputFormat.PDF and content_file is not None:
        raise ContentNotExpected(ids={"file": document.info.name}, name=document.info.name)

    validation = _Validation(trust, policy, at)
    validation_time: datetime = validation.moment
    _logger.info("verifying %s (%s, sha256 %s)", document.info.name, document.format, document.info.sha256)

    if document.format is InputFormat.PDF:
        signatures, errors = await _verify_pdf(document, validation)
    else:
        signatures, errors = await _verify_cms(document, content_file, validation)

    if not trust.anchors:
        errors.append("no_trust_anchors")
    report = Report(
        id=uuid.uuid4().hex,
        file=document.info,
        format=str(document.format),
        signatures=signatures,
        validation_time=validation_time.isoformat(),
        trust=_trust_info(trust),
        policy=policy.info(),
        qsign_version=__version__,
        content=content_file.info if content_file is not None else None,
        errors=errors,
    )
    _logger.info("verified %s: verdict %s, %d signatures", document.info.name, report.verdict,
                 len(signatures))
    return report


_StatusBuilder = Callable[[SignatureStatus, RevocationInfo], SignatureReport]


class _Validation:
    """Settings of one file's validation, and the steps every signature record goes through."""

    def __init__(self, trust: TrustSettings, policy: AlgorithmPolicy, at: datetime | None) -> None:
        self.trust, self.policy, self.at = trust, policy, at
        self.moment: datetime = at if at is not None else datetime.now(timezone.utc)

    def context(self, embedded: EmbeddedRevocationData, *, at: datetime | None = None,
                embedded_only: bool = False) -> ValidationContext:
        """Return a validation context with the trust settings and the file's embedded revocation data.

        ``embedded_only`` validates at ``at`` with nothing fetched, and accepts revocation data issued
        after that moment (``retroactive_revinfo``): data embedded at signing time is often a few
        seconds newer than the signature timestamp. When fetching, responses up to
        ``FETCH_TIME_TOLERANCE`` newer than the validation time are accepted, because that time is taken
        before the fetch.
        """
        fetching = self.trust.online and not embedded_only
        return ValidationContext(
            trust_roots=list(self.trust.anchors),
            other_certs=list(self.trust.intermediates) + list(embedded.certificates),
            allow_fetching=fetching,
            revocation_mode=self.trust.revocation_mode,
            crls=list(embedded.crls),
            ocsps=list(embedded.ocsps),
            retroactive_revinfo=embedded_only,
            weak_hash_algos=set(self.policy.weak_digest_algorithms),
            moment=at if embedded_only else self.at,
            time_tolerance=FETCH_TIME_TOLERANCE if fetching else DEFAULT_TIME_TOLERANCE,
        )

    async def record(self, validate: Callable[[ValidationContext], Awaitable[SignatureStatus]],
                     build: _StatusBuilder, signed_data: cms.SignedData,
                     embedded: EmbeddedRevocationData) -> SignatureReport:
        """Validate one signature, check the revocation of its path, and build its record.

        When revocation data is missing or stale at the validation time but the signature has a
        valid timestamp, the signature is validated again at the timestamp time with the embedded data
        only (the PAdES B-LT model): data embedded at signing time proves the status at that time.
        """
        other_certificates = _signed_data_certificates(signed_data) + list(embedded.certificates)
        context = self.context(embedded)
        try:
            status = await validate(context)
            revocation = await self._revocation(status, other_certificates, context, embedded, self.trust.online)
        finally:
            # Closes the HTTP session that an online context opens for fetching.
            await context.aclose()
        # Each context takes "now" when it is made; the report names one validation time for all.
        revocation.checked_at = self.moment.isoformat()
        report = build(status, revocation)
        proof_time = _timestamp_time(status)
        if proof_time is None or not _lacks_revocation_data(revocation):
            return report

        _logger.info("revocation data of %s not usable at %s; checking the embedded data at the timestamp "
                     "time %s", report.signer, context.moment.isoformat(), proof_time.isoformat())
        past_context = self.context(embedded, at=proof_time, embedded_only=True)
        past_status = await validate(past_context)
        past_revocation = await self._revocation(past_status, other_certificates, past_context, embedded, False)
        if past_revocation.status is RevocationStatus.UNKNOWN:
            return report
        # NOTE: the timestamp itself is then checked at its own time too, so a TSA certificate revoked or
        # expired since then goes unnoticed here. Past signature validation (ETSI EN 319 102-1) would
        # check the TSA certificate now, or under a later document timestamp.
        past_report = build(past_status, past_revocation)
        past_report.details.append(f"revocation data not usable at {context.moment.isoformat()}; validated at "
                                   f"the timestamp time {proof_time.isoformat()} with the embedded data")
        return past_report

    @staticmethod
    async def _revocation(status: SignatureStatus, other_certificates: list[x509.Certificate],
                          context: ValidationContext, embedded: EmbeddedRevocationData,
                          online: bool) -> RevocationInfo:
        return await assess_revocation(status.signing_cert, other_certificates, status.validation_path,
                                       status.trust_problem_indic, status.revocation_details, context,
                                       embedded, online)


def _signed_data_certificates(signed_data: cms.SignedData) -> list[x509.Certificate]:
    return [choice.chosen for choice in signed_data["certificates"] or () if choice.name == "certificate"]


def _lacks_revocation_data(revocation: RevocationInfo) -> bool:
    return any(entry.reason in REVOCATION_DATA_MISSING for entry in revocation.certificates)


def _timestamp_time(status: SignatureStatus) -> datetime | None:
    """Return the time of the signature's valid timestamp, or of a valid document timestamp itself."""
    own_time = getattr(status, "timestamp", None)
    if isinstance(own_time, datetime) and status.intact and status.valid:
        return own_time
    timestamp = getattr(status, "timestamp_validity", None)
    if timestamp is not None and timestamp.intact and timestamp.valid:
        return timestamp.timestamp
    return None


def _trust_info(trust: TrustSettings) -> TrustInfo:
    return TrustInfo(
        source=trust.source,
        anchors=[describe_certificate(certificate) for certificate in trust.anchors],
        intermediates=[describe_certificate(certificate) for certificate in trust.intermediates],
        online=trust.online,
        revocation_mode=trust.revocation_mode,
    )


def _open_pdf(document: InputFile, handle: BinaryIO) -> PdfFileReader:
    name = document.info.name
    try:
        reader = PdfFileReader(handle)
        encrypted = reader.encrypted
    except _PARSE_ERRORS as exc:
        _logger.info("cannot read PDF %s: %s", name, exc)
        raise PdfMalformed(ids={"file": name}, name=name, detail=str(exc)) from exc

    if encrypted:
        # Files encrypted with an empty user password open in any viewer; pyHanko validates them once
        # decrypted. Any other password, or public-key encryption, cannot be opened here.
        try:
            result = reader.decrypt(b"")
        except _PARSE_ERRORS as exc:
            raise PdfEncrypted(ids={"file": name}, name=name) from exc
        if result.status == AuthStatus.FAILED:
            raise PdfEncrypted(ids={"file": name}, name=name)
    return reader


async def _verify_pdf(document: InputFile, validation: _Validation) -> tuple[list[SignatureReport], list[str]]:
    with document.path.open("rb") as handle:
        reader = _open_pdf(document, handle)
        try:
            fields = list(enumerate_sig_fields(reader, filled_status=True))
        except _PARSE_ERRORS as exc:
            name = document.info.name
            raise PdfMalformed(ids={"file": name}, name=name, detail=str(exc)) from exc

        # Field names are pyHanko TextStringObjects; the report wants plain strings.
        signature_fields = frozenset(str(field_name) for field_name, _, _ in fields)
        dss_data = dss_revocation_data(reader)
        signatures = [await _verify_pdf_field(reader, str(field_name), field, validation, dss_data,
                                              signature_fields)
                      for field_name, _, field in fields]
        signatures.sort(key=lambda record: (record.revision is None, record.revision or 0))
        errors = [] if signatures else ["no_signatures"]
        _flag_unexplained_tail(reader, signatures)
        try:
            assign_pades_levels(reader, signatures)
        except _PARSE_ERRORS as exc:
            _logger.info("cannot determine the PAdES levels of %s: %s", document.info.name, exc)
            errors.append("pades_level_unknown")
    return signatures, errors


def _flag_unexplained_tail(reader: PdfFileReader, signatures: list[SignatureReport]) -> None:
    """Mark signatures of the last revision that do not reach the end of the file.

    Such bytes belong to no revision: readers ignore them today, but the signature does not cover them,
    so the file is not exactly what was signed. The signature cannot then be TOTAL_PASSED.
    """
    last_revision = reader.xrefs.total_revisions - 1
    for record in signatures:
        if record.coverage == "entire_revision" and record.revision == last_revision:
            record.errors.append("unexplained_bytes_after_signature")
            if record.indication is Indication.TOTAL_PASSED:
                record.indication = Indication.INDETERMINATE
                record.sub_indication = AdESIndeterminate.SIG_CONSTRAINTS_FAILURE.name


async def _verify_pdf_field(reader: PdfFileReader, field_name: str, field, validation: _Validation,
                            dss_data: EmbeddedRevocationData, signature_fields: frozenset[str]) -> SignatureReport:
    """Validate one filled signature field; a damaged signature becomes a failed record, not an error."""
    try:
        embedded = EmbeddedPdfSignature(reader, field, field_name)
    except _PARSE_ERRORS as exc:
        _logger.info("signature field %s cannot be read: %s", field_name, exc)
        return report_from_unreadable(SignatureKind.PDF_SIGNATURE, field_name, None, "signature_malformed",
                                      str(exc))

    is_timestamp = embedded.sig_object_type == "/DocTimeStamp"
    kind = SignatureKind.DOCUMENT_TIMESTAMP if is_timestamp else SignatureKind.PDF_SIGNATURE
    revision = None
    policy = validation.policy
    try:
        revision = embedded.signed_revision
        revocation_data = dss_data.merged(signed_data_revocation_data(embedded.signed_data, embedded.signer_info))
        signed_revision = revision

        def shown_changes(names):
            return fields_changed_since(reader, signed_revision, names)

        if is_timestamp:
            return await validation.record(
                lambda context: async_validate_pdf_timestamp(embedded, validation_context=context),
                lambda status, revocation: report_from_timestamp_status(
                    field_name, revision, status, policy, revocation=revocation, signature_fields=signature_fields,
                    shown_changes=shown_changes),
                embedded.signed_data, revocation_data)
        return await validation.record(
            lambda context: async_validate_pdf_signature(embedded, signer_validation_context=context),
            lambda status, revocation: report_from_pdf_status(
                field_name, revision, status, policy, revocation=revocation, signature_fields=signature_fields,
                shown_changes=shown_changes),
            embedded.signed_data, revocation_data)
    except SignatureValidationError as exc:
        _logger.info("signature %s failed validation: %s", field_name, exc.failure_message)
        return report_from_unreadable(kind, field_name, revision, "signature_format_invalid",
                                      exc.failure_message, exc.ades_subindication)
    except _PARSE_ERRORS as exc:
        _logger.info("signature %s cannot be parsed: %s", field_name, exc)
        return report_from_unreadable(kind, field_name, revision, "signature_malformed", str(exc))


def _load_signed_data(document: InputFile) -> cms.SignedData:
    name = document.info.name
    data = document.path.read_bytes()
    try:
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        content_info = cms.ContentInfo.load(data)
        if content_info["content_type"].native != "signed_data":
            raise ValueError(f"content type is {content_info['content_type'].native}, not signed_data")
        signed_data = content_info["content"]
        # asn1crypto parses lazily: read the parts validation needs so that damage shows here.
        _ = signed_data["encap_content_info"]["content_type"].native, signed_data["certificates"]
        signer_infos = list(signed_data["signer_infos"])
        for signer_info in signer_infos:
            _ = signer_info["digest_algorithm"]["algorithm"].native, signer_info["signed_attrs"]
    except _PARSE_ERRORS as exc:
        _logger.info("cannot read CMS %s: %s", name, exc)
        raise CmsMalformed(ids={"file": name}, name=name, detail=str(exc)) from exc

    if not signer_infos:
        raise CmsMalformed(ids={"file": name}, name=name, detail="no SignerInfo")
    return signed_data


def _single_signer_copies(signed_data: cms.SignedData) -> list[cms.SignedData]:
    """Split a SignedData into one copy per SignerInfo, because pyHanko validates exactly one."""
    signer_infos = list(signed_data["signer_infos"])
    if len(signer_infos) == 1:
        return [signed_data]
    copies = []
    for signer_info in signer_infos:
        copy = cms.SignedData.load(signed_data.dump())
        copy["signer_infos"] = cms.SignerInfos([signer_info])
        copies.append(copy)
    return copies


async def _verify_cms(document: InputFile, content: InputFile | None,
                      validation: _Validation) -> tuple[list[SignatureReport], list[str]]:
    name = document.info.name
    signed_data = _load_signed_data(document)
    detached = signed_data["encap_content_info"]["content"] is core.VOID or \
        signed_data["encap_content_info"]["content"].native is None
    if detached and content is None:
        raise ContentRequired(ids={"file": name}, name=name)
    if not detached and content is not None:
        raise ContentNotExpected(ids={"file": name}, name=name)

    signatures = []
    policy = validation.policy
    for single in _single_signer_copies(signed_data):
        try:
            revocation_data = signed_data_revocation_data(single, single["signer_infos"][0])
            signatures.append(await validation.record(
                lambda context, single=single: _validate_cms_signer(single, content.path if content else None,
                                                                    context),
                lambda status, revocation: report_from_cms_status(status, policy, revocation=revocation),
                single, revocation_data))
        except SignatureValidationError as exc:
            _logger.info("CMS signature in %s failed validation: %s", name, exc.failure_message)
            signatures.append(report_from_unreadable(SignatureKind.CMS_SIGNATURE, None, None,
                                                     "signature_format_invalid", exc.failure_message,
                                                     exc.ades_subindication))
        except _PARSE_ERRORS as exc:
            _logger.info("CMS signature in %s cannot be parsed: %s", name, exc)
            signatures.append(report_from_unreadable(SignatureKind.CMS_SIGNATURE, None, None,
                                                     "signature_malformed", str(exc)))
    return signatures, []


async def _validate_cms_signer(signed_data: cms.SignedData, content_path: Path | None,
                               context: ValidationContext) -> StandardCMSSignatureStatus:
    if content_path is not None:
        with content_path.open("rb") as content_handle:
            return await async_validate_detached_cms(content_handle, signed_data,
                                                     signer_validation_context=context)

    # Enveloping signature: pyHanko's detached-CMS function rejects encapsulated content, so validate
    # the SignedData directly and collect the signing time and timestamps the same way it would.
    signer_info = signed_data["signer_infos"][0]
    timing = await collect_timing_info(signer_info, ts_validation_context=context, raw_digest=None)
    return await async_validate_cms_signature(signed_data, status_cls=StandardCMSSignatureStatus,
                                              validation_context=context, status_kwargs=timing)
