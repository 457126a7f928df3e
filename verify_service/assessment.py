"""Turn pyHanko's validation status objects into report records with an ETSI indication.

pyHanko reports *intact*, *valid*, the trust sub-indication, the byte-range coverage and the
modification analysis separately. This module copies each of them into a ``SignatureReport``, then
derives the indication, the sub-indication and the per-signature verdict from those fields alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from asn1crypto import x509
from pyhanko.sign.ades.report import AdESFailure, AdESIndeterminate, AdESStatus, AdESSubIndic
from pyhanko.sign.diff_analysis import DiffResult
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    ModificationInfo,
    PdfSignatureStatus,
    SignatureCoverageLevel,
    SignatureStatus,
    StandardCMSSignatureStatus,
    TimestampSignatureStatus,
)

from verify_service.certificates import certificate_info, readable_name
from verify_service.policy import AlgorithmPolicy
from verify_service.report import (
    Indication,
    RevocationInfo,
    RevocationStatus,
    SignatureKind,
    SignatureReport,
    TimestampInfo,
)
from verify_service.revocation import REVOCATION_DATA_MISSING

__all__ = ["apply_assessment", "report_from_cms_status", "report_from_pdf_status",
           "report_from_timestamp_status", "report_from_unreadable"]

#: Trust sub-indications that mean the certificate is definitely not trusted with the given anchors, as
#: opposed to ones that more data or a later try could change (TRY_LATER, NO_POE, ...).
_DEFINITELY_UNTRUSTED = {
    AdESIndeterminate.NO_CERTIFICATE_CHAIN_FOUND,
    AdESIndeterminate.CHAIN_CONSTRAINTS_FAILURE,
    AdESIndeterminate.CRYPTO_CONSTRAINTS_FAILURE,
    AdESIndeterminate.REVOKED_NO_POE,
    AdESIndeterminate.REVOKED_CA_NO_POE,
    AdESIndeterminate.OUT_OF_BOUNDS_NO_POE,
    AdESIndeterminate.EXPIRED,
    AdESIndeterminate.NOT_YET_VALID,
}

_Problem = tuple[Indication, str | None, str]

#: Returns the names among the given form fields whose value or appearance changed after the signature.
FieldChangeFilter = Callable[[Iterable[str]], list[str]]


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def _trust_problem(status: SignatureStatus, revocation: RevocationInfo | None) -> AdESSubIndic | None:
    """Return pyHanko's trust sub-indication, as TRY_LATER when the path lacks usable revocation data.

    pyHanko 0.38 reports a path that stops for missing revocation data as
    CERTIFICATE_CHAIN_GENERAL_FAILURE, and ``revocation`` separates that case from other path failures.
    """
    indication = status.trust_problem_indic
    if indication is None or revocation is None or revocation.status is not RevocationStatus.UNKNOWN:
        return indication
    if any(entry.reason in REVOCATION_DATA_MISSING for entry in revocation.certificates):
        return AdESIndeterminate.TRY_LATER
    return indication


def _trusted(indication: AdESSubIndic | None, status: SignatureStatus) -> bool | None:
    """Decide whether the signer's certificate chains to an anchor with allowed key usage (``None``: unknown).

    Unlike pyHanko's ``SignatureStatus.trusted``, the result does not include *intact*, because the report
    keeps the two apart. pyHanko skips the trust check when the signature value does not verify.
    """
    if indication is None:
        return True if status.validation_path is not None else None
    if isinstance(indication, AdESFailure) or indication in _DEFINITELY_UNTRUSTED:
        return False
    return None


def _trust_anchor(status: SignatureStatus) -> str | None:
    path = status.validation_path
    if path is None or status.trust_problem_indic is not None:
        return None
    anchor = path.trust_anchor
    certificate = getattr(anchor, "certificate", None)
    if certificate is not None:
        return readable_name(certificate.subject)
    return readable_name(anchor.authority.name)


def _fill_common(report: SignatureReport, status: SignatureStatus, signer: x509.Certificate,
                 revocation: RevocationInfo | None) -> None:
    report.signer_certificate = certificate_info(signer)
    report.signer = report.signer_certificate.subject
    report.digest_algorithm = status.md_algorithm
    report.signature_algorithm = status.pkcs7_signature_mechanism
    report.intact = status.intact
    report.valid = status.valid
    trust_problem = _trust_problem(status, revocation)
    report.trusted = _trusted(trust_problem, status)
    report.trust_anchor = _trust_anchor(status)
    report.revocation = revocation
    if trust_problem is not None:
        report.sub_indication = trust_problem.standard_name
    if revocation is not None:
        for entry in revocation.certificates:
            if entry.reason in REVOCATION_DATA_MISSING:
                report.details.append(f"no usable revocation data for {entry.subject}: {entry.reason}")


def _fill_modifications(report: SignatureReport, status: ModificationInfo,
                        signature_fields: frozenset[str] | None, shown_changes: FieldChangeFilter | None) -> None:
    coverage = status.coverage
    report.coverage = coverage.name.lower() if coverage is not None else None
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        report.modified_after = False
    elif coverage is not None:
        report.modified_after = True

    level = status.modification_level
    report.modifications = level.name.lower() if level is not None else None
    report.modifications_allowed = status.docmdp_ok
    diff_result = status.diff_result
    if isinstance(diff_result, DiffResult):
        report.changed_objects = [f"form field {name}" for name in sorted(diff_result.changed_form_fields)]
        # pyHanko allows filling any form field after an approval signature. Here only signature fields
        # may change, because a changed text or choice field changes what the document shows. pyHanko
        # also lists fields whose page was merely rewritten, so ``shown_changes`` keeps those whose
        # value or appearance differs. Without the two arguments every listed field counts.
        changed = set(diff_result.changed_form_fields) - (signature_fields or frozenset())
        if changed and shown_changes is not None:
            rewritten_only = changed - set(shown_changes(changed))
            changed -= rewritten_only
            report.changed_objects = [f"form field {name}" for name in sorted(diff_result.changed_form_fields)
                                      if name not in rewritten_only]
        if changed:
            report.errors.append("form_field_changed_after_signing")
            report.details.append("form fields changed after signing: " + ", ".join(sorted(changed)))
    elif diff_result is not None:
        # A SuspiciousModification: its message names the object and the rule it broke.
        report.changed_objects = [str(diff_result)]
        report.details.append(f"modification analysis: {diff_result}")


def _timestamp_info(status: TimestampSignatureStatus) -> TimestampInfo:
    return TimestampInfo(time=_iso(status.timestamp), tsa=readable_name(status.signing_cert.subject),
                         intact=status.intact, valid=status.valid, trusted=status.trusted)


def _fill_signer_timing(report: SignatureReport, status: StandardCMSSignatureStatus) -> None:
    report.signing_time = _iso(status.signer_reported_dt)
    if status.timestamp_validity is not None:
        report.timestamp = _timestamp_info(status.timestamp_validity)


def report_from_pdf_status(field: str, revision: int, status: PdfSignatureStatus,
                           policy: AlgorithmPolicy | None = None, *, revocation: RevocationInfo | None = None,
                           signature_fields: frozenset[str] | None = None,
                           shown_changes: FieldChangeFilter | None = None) -> SignatureReport:
    """Build the record of a PDF signature (``/Sig``) from pyHanko's status.

    ``revocation`` is the revocation check of the signer's path. ``signature_fields`` are the names of
    the document's signature fields, the only form fields allowed to change after the signature.
    ``shown_changes`` filters the other changed fields down to those whose value or appearance changed.
    """
    report = SignatureReport(kind=SignatureKind.PDF_SIGNATURE, field=field, revision=revision)
    _fill_common(report, status, status.signing_cert, revocation)
    _fill_signer_timing(report, status)
    _fill_modifications(report, status, signature_fields, shown_changes)
    if status.seed_value_constraint_error is not None:
        report.errors.append("seed_value_constraints_failed")
        report.details.append(str(status.seed_value_constraint_error.failure_message))
    apply_assessment(report, content_timestamp=status.content_timestamp_validity, policy=policy)
    return report


def report_from_timestamp_status(field: str, revision: int, status: DocumentTimestampStatus,
                                 policy: AlgorithmPolicy | None = None, *, revocation: RevocationInfo | None = None,
                                 signature_fields: frozenset[str] | None = None,
                                 shown_changes: FieldChangeFilter | None = None) -> SignatureReport:
    """Build the record of a PDF document timestamp (``/DocTimeStamp``); the signer is the TSA."""
    report = SignatureReport(kind=SignatureKind.DOCUMENT_TIMESTAMP, field=field, revision=revision)
    _fill_common(report, status, status.signing_cert, revocation)
    report.timestamp_time = _iso(status.timestamp)
    _fill_modifications(report, status, signature_fields, shown_changes)
    apply_assessment(report, policy=policy)
    return report


def report_from_cms_status(status: StandardCMSSignatureStatus,
                           policy: AlgorithmPolicy | None = None, *,
                           revocation: RevocationInfo | None = None) -> SignatureReport:
    """Build the record of one SignerInfo of a CMS signature (``.p7s``)."""
    report = SignatureReport(kind=SignatureKind.CMS_SIGNATURE, field=None, revision=None)
    _fill_common(report, status, status.signing_cert, revocation)
    _fill_signer_timing(report, status)
    apply_assessment(report, content_timestamp=status.content_timestamp_validity, policy=policy)
    return report


def report_from_unreadable(kind: SignatureKind, field: str | None, revision: int | None, code: str,
                           detail: str, sub_indication: AdESSubIndic | None = None) -> SignatureReport:
    """Build the record of a signature that pyHanko could not validate at all.

    ``sub_indication`` is the one pyHanko attached to its error. Without it, the signature is reported as
    TOTAL_FAILED with FORMAT_FAILURE, because its structure could not be read.
    """
    report = SignatureReport(kind=kind, field=field, revision=revision, errors=[code], details=[detail])
    indication = sub_indication or AdESFailure.FORMAT_FAILURE
    report.indication = _INDICATION_OF_STATUS[indication.status]
    report.sub_indication = indication.standard_name
    return report


_INDICATION_OF_STATUS = {
    AdESStatus.PASSED: Indication.TOTAL_PASSED,
    AdESStatus.INDETERMINATE: Indication.INDETERMINATE,
    AdESStatus.FAILED: Indication.TOTAL_FAILED,
}


def _problems(report: SignatureReport, content_timestamp: TimestampSignatureStatus | None,
              policy: AlgorithmPolicy | None) -> list[_Problem]:
    """List every problem of a record as (indication, sub-indication, error code)."""
    failed, indeterminate = Indication.TOTAL_FAILED, Indication.INDETERMINATE
    problems: list[_Problem] = []

    if report.intact is False:
        problems.append((failed, AdESFailure.HASH_FAILURE.name, "digest_mismatch"))
    if report.valid is False:
        problems.append((failed, AdESFailure.SIG_CRYPTO_FAILURE.name, "signature_invalid"))

    if report.sub_indication is not None:
        trust_indication = AdESFailure.__members__.get(report.sub_indication)
        indication = failed if trust_indication is not None else indeterminate
        problems.append((indication, report.sub_indication, report.sub_indication.lower()))
    elif report.trusted is None:
        problems.append((indeterminate, None, "trust_not_evaluated"))

    if report.coverage in ("unclear", "contiguous_block_from_start"):
        problems.append((failed, AdESFailure.FORMAT_FAILURE.name, "coverage_incomplete"))
    elif report.modifications_allowed is False:
        # NOTE: ETSI EN 319 102-1 has no sub-indication for changes after signing. A change that the
        # document's DocMDP rules (ISO 32000) forbid makes the file non-conformant, hence FORMAT_FAILURE;
        # a later ETSI mapping may choose another.
        problems.append((failed, AdESFailure.FORMAT_FAILURE.name, "modified_after_signing"))
    elif report.coverage == "entire_revision" and report.modifications is None:
        problems.append((indeterminate, None, "modifications_not_analysed"))

    for name, timestamp in (("timestamp", report.timestamp), ("content_timestamp", content_timestamp)):
        if timestamp is None:
            continue
        # Without a usable timestamp the signature has no proof of existence at the asserted time.
        if not (timestamp.intact and timestamp.valid):
            problems.append((indeterminate, AdESIndeterminate.NO_POE.name, f"{name}_invalid"))
        elif not timestamp.trusted:
            problems.append((indeterminate, AdESIndeterminate.NO_POE.name, f"{name}_untrusted"))

    if "form_field_changed_after_signing" in report.errors:
        # NOTE: ETSI EN 319 102-1 has no sub-indication for content changed within what DocMDP allows;
        # SIG_CONSTRAINTS_FAILURE (the validation constraints are not met) is the nearest.
        problems.append((indeterminate, AdESIndeterminate.SIG_CONSTRAINTS_FAILURE.name,
                         "form_field_changed_after_signing"))
    if "seed_value_constraints_failed" in report.errors:
        problems.append((indeterminate, AdESIndeterminate.SIG_CONSTRAINTS_FAILURE.name,
                         "seed_value_constraints_failed"))
    if policy is not None:
        for code in policy.violations(report):
            problems.append((indeterminate, AdESIndeterminate.CRYPTO_CONSTRAINTS_FAILURE.name, code))
    return problems


def apply_assessment(report: SignatureReport, content_timestamp: TimestampSignatureStatus | None = None,
                     policy: AlgorithmPolicy | None = None) -> None:
    """Set the indication, sub-indication and error codes of a record from its fields.

    A failure (TOTAL_FAILED) takes precedence over an unknown (INDETERMINATE); the sub-indication is the
    one of the first problem with that indication.
    """
    problems = _problems(report, content_timestamp, policy)
    for _, _, code in problems:
        if code not in report.errors:
            report.errors.append(code)

    chosen: _Problem | None = None
    for wanted in (Indication.TOTAL_FAILED, Indication.INDETERMINATE):
        chosen = next((problem for problem in problems if problem[0] is wanted), None)
        if chosen is not None:
            break

    if chosen is None:
        report.indication = Indication.TOTAL_PASSED
        report.sub_indication = None
    else:
        report.indication, report.sub_indication = chosen[0], chosen[1]
