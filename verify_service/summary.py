"""The human-readable form of a verification report, in zh-CN or English, for ``qsign verify``."""

from __future__ import annotations

import unicodedata

from qsign.i18n import N_, gettext_for
from verify_service.report import Report, SignatureReport

__all__ = ["COVERAGE_LABELS", "KIND_LABELS", "MODIFICATION_LABELS", "PROBLEM_MESSAGES", "REVOCATION_REASON_LABELS",
           "REVOCATION_SOURCE_LABELS", "REVOCATION_STATUS_LABELS", "VERDICT_LABELS", "format_summary", "format_table",
           "revocation_text"]

#: One sentence per error code that a report can contain.
PROBLEM_MESSAGES = {
    "no_signatures": N_("The file contains no signature."),
    "no_trust_anchors": N_("No trust anchor is configured, so no signer can be trusted."),
    "digest_mismatch": N_("The signed bytes were changed: the message digest does not match."),
    "signature_invalid": N_("The signature value does not verify with the signer's public key."),
    "trust_not_evaluated": N_("The certificate path was not evaluated."),
    "no_certificate_chain_found": N_("No certificate path leads to a trust anchor."),
    "chain_constraints_failure": N_("The certificate path or the key usage does not meet the constraints."),
    "certificate_chain_general_failure": N_("The certificate path could not be validated."),
    "crypto_constraints_failure": N_("An algorithm in the certificate path is not allowed."),
    "crypto_constraints_failure_no_poe": N_("An algorithm is no longer allowed and no proof of existence "
                                            "shows the signature is older."),
    "revoked_no_poe": N_("The signer's certificate is revoked."),
    "revoked_ca_no_poe": N_("A CA certificate in the path is revoked."),
    "out_of_bounds_no_poe": N_("The signer's certificate is expired or not yet valid."),
    "try_later": N_("A certificate of the path names a CRL or OCSP responder, but no usable revocation data "
                    "is available (none embedded and fetching off, stale, or the responder unreachable); "
                    "verify online or try again later."),
    "no_poe": N_("No proof of existence for the signature time."),
    "coverage_incomplete": N_("The byte range does not cover the whole signed revision."),
    "modified_after_signing": N_("The document was changed after signing in a way the signature does not allow."),
    "modifications_not_analysed": N_("Changes after signing could not be analysed."),
    "timestamp_invalid": N_("The signature timestamp is invalid."),
    "timestamp_untrusted": N_("The signature timestamp's TSA is not trusted."),
    "content_timestamp_invalid": N_("The content timestamp is invalid."),
    "content_timestamp_untrusted": N_("The content timestamp's TSA is not trusted."),
    "seed_value_constraints_failed": N_("The signature does not meet the seed value constraints of its field."),
    "signature_format_invalid": N_("The signature does not have a valid format."),
    "signature_malformed": N_("The signature cannot be parsed."),
    "weak_digest_algorithm": N_("The digest algorithm is too weak for the algorithm policy."),
    "weak_key": N_("The signer's key is shorter than the algorithm policy allows."),
    "pades_level_unknown": N_("The PAdES level could not be determined."),
    "unexplained_bytes_after_signature": N_("The file has bytes after the signed revision that belong to no "
                                            "revision; the signature does not cover them."),
    "hash_failure": N_("The signed bytes were changed: the message digest does not match."),
    "sig_crypto_failure": N_("The signature value does not verify with the signer's public key."),
    "format_failure": N_("The signature does not have a valid format."),
    "expired": N_("The signer's certificate is expired."),
    "not_yet_valid": N_("The signer's certificate is not yet valid."),
    "revoked": N_("The signer's certificate is revoked."),
    "sig_constraints_failure": N_("The signature does not meet the constraints of the validation policy."),
    "form_field_changed_after_signing": N_("A form field's value or appearance was changed after signing, so the "
                                           "document shows something other than what was signed."),
}

#: Revocation status of a certificate (``RevocationStatus``).
REVOCATION_STATUS_LABELS = {
    "not_applicable": N_("no revocation information defined"),
    "good": N_("not revoked"),
    "revoked": N_("revoked"),
    "unknown": N_("unknown"),
}

#: Reason of a certificate's revocation status (``CertificateRevocation.reason``).
REVOCATION_REASON_LABELS = {
    "no_revocation_endpoint": N_("the certificate names no CRL and no OCSP responder"),
    "checked": N_("checked"),
    "revoked": N_("a CRL or OCSP response says revoked"),
    "no_revocation_data_offline": N_("no revocation data in the file, and fetching is off"),
    "revocation_fetch_failed": N_("the CRL or OCSP responder could not be reached"),
    "revocation_data_not_accepted": N_("the revocation data is stale or invalid"),
    "not_checked": N_("not checked, because the path failed before"),
}

#: Origin of the revocation data (``RevocationSource``).
REVOCATION_SOURCE_LABELS = {
    "embedded": N_("embedded in the file"),
    "online": N_("fetched online"),
}

#: A short localized gloss next to each ETSI indication, which stays in English.
VERDICT_LABELS = {
    "TOTAL_PASSED": N_("passed"),
    "TOTAL_FAILED": N_("failed"),
    "INDETERMINATE": N_("indeterminate"),
}


def verdict_text(indication: str, sub_indication: str | None, _) -> str:
    """Return e.g. ``TOTAL_FAILED/HASH_FAILURE (failed)`` in the gettext function's language."""
    text = indication + (f"/{sub_indication}" if sub_indication else "")
    return _("{indication} ({meaning})").format(indication=text, meaning=_(VERDICT_LABELS[indication]))

KIND_LABELS = {
    "pdf_signature": N_("Signature"),
    "document_timestamp": N_("Document timestamp"),
    "cms_signature": N_("CMS signature"),
}

COVERAGE_LABELS = {
    "entire_file": N_("entire file"),
    "entire_revision": N_("entire revision, later changes appended"),
    "contiguous_block_from_start": N_("part of the file"),
    "unclear": N_("unclear"),
}

MODIFICATION_LABELS = {
    "none": N_("none"),
    "lta_updates": N_("long-term validation data only"),
    "form_filling": N_("form filling and further signatures"),
    "annotations": N_("annotations"),
    "other": N_("other changes"),
}


def _yes_no(value: bool | None, _) -> str:
    if value is None:
        return _("unknown")
    return _("yes") if value else _("no")


def _field(_, label: str, value: object, indent: str = "") -> str:
    """Return one ``label: value`` line; the separator is translated (Chinese uses a full-width colon)."""
    return indent + _("{label}: {value}").format(label=_(label), value=value)


def _signature_lines(index: int, signature: SignatureReport, _) -> list[str]:
    title = f"{_(KIND_LABELS[signature.kind])} {index}"
    if signature.field is not None and signature.revision is not None:
        title += _(" (field {field}, revision {revision})").format(field=signature.field,
                                                                 revision=signature.revision)
    elif signature.field is not None:
        title += _(" (field {field})").format(field=signature.field)
    verdict = verdict_text(signature.indication, signature.sub_indication, _)
    lines = [_("{label}: {value}").format(label=title, value=verdict)]
    indent = "  "
    if signature.level is not None:
        lines.append(_field(_, N_("PAdES level"), signature.level, indent))

    lines.append(_field(_, N_("Signer"), signature.signer or _("unknown"), indent))
    if signature.signer_certificate is not None:
        certificate = signature.signer_certificate
        lines.append(_field(_, N_("Issuer"), certificate.issuer, indent))
        lines.append(_field(_, N_("Certificate valid"), f"{certificate.not_before} – {certificate.not_after}",
                            indent))
    if signature.signing_time:
        lines.append(_field(_, N_("Signing time (claimed by the signer)"), signature.signing_time, indent))
    if signature.timestamp_time:
        lines.append(_field(_, N_("Timestamp time"), signature.timestamp_time, indent))
    if signature.timestamp is not None:
        trusted = _field(_, N_("trusted"), _yes_no(signature.timestamp.trusted, _))
        lines.append(_field(_, N_("Signature timestamp"), f"{signature.timestamp.time} ({trusted})", indent))
    if signature.digest_algorithm:
        lines.append(_field(_, N_("Algorithms"), f"{signature.digest_algorithm}, {signature.signature_algorithm}",
                            indent))

    checks = "   ".join(_field(_, label, _yes_no(value, _)) for label, value in (
        (N_("Intact"), signature.intact), (N_("Valid"), signature.valid), (N_("Trusted"), signature.trusted)))
    lines.append(indent + checks)
    if signature.coverage is not None:
        lines.append(_field(_, N_("Coverage"), _(COVERAGE_LABELS.get(signature.coverage, signature.coverage)), indent))
    if signature.modified_after is not None:
        changes = _(MODIFICATION_LABELS.get(signature.modifications, signature.modifications)) \
            if signature.modifications else _("not analysed")
        lines.append(_field(_, N_("Changes after signing"), changes, indent))
    for changed in signature.changed_objects:
        lines.append(f"{indent}  - {changed}")
    if signature.revocation is not None:
        lines.extend(_revocation_lines(signature, _, indent))
    for code in signature.errors:
        message = _(PROBLEM_MESSAGES[code]) if code in PROBLEM_MESSAGES else code
        lines.append(f"{indent}! {message} [{code}]")
    return lines


def revocation_text(status: str, source: str | None, _) -> str:
    """Return e.g. ``not revoked (embedded in the file)`` in the gettext function's language."""
    text = _(REVOCATION_STATUS_LABELS.get(status, status))
    if source is not None:
        text = _("{status} ({source})").format(status=text, source=_(REVOCATION_SOURCE_LABELS.get(source, source)))
    return text


def _revocation_lines(signature: SignatureReport, _, indent: str) -> list[str]:
    revocation = signature.revocation
    lines = [_field(_, N_("Revocation"), revocation_text(revocation.status, revocation.source, _), indent)]
    for entry in revocation.certificates:
        reason = _(REVOCATION_REASON_LABELS.get(entry.reason, entry.reason))
        lines.append(f"{indent}  - {entry.subject}: {revocation_text(entry.status, entry.source, _)}; {reason}")
    return lines


def format_summary(report: Report, language: str) -> str:
    """Return the report as text lines for a terminal, in ``language``."""
    _ = gettext_for(language)
    file = report.file
    size = _("{size} bytes").format(size=file.size)
    lines = [_field(_, N_("File"), f"{file.name} ({size}, SHA-256 {file.sha256})")]
    if report.content is not None:
        lines.append(_field(_, N_("Signed content"), f"{report.content.name} (SHA-256 {report.content.sha256})"))
    lines.append(_field(_, N_("Verdict"), verdict_text(report.verdict, report.sub_indication, _)))
    lines.append(_field(_, N_("Report id"), report.id))
    lines.append(_field(_, N_("Validation time"), report.validation_time))
    anchors = ", ".join(anchor["subject"] for anchor in report.trust.anchors) or _("none")
    lines.append(_field(_, N_("Trust anchors"), anchors))
    for code in report.errors:
        lines.append(f"! {_(PROBLEM_MESSAGES.get(code, code))} [{code}]")

    for index, signature in enumerate(report.signatures, start=1):
        lines.append("")
        lines.extend(_signature_lines(index, signature, _))
    return "\n".join(lines)


def format_table(results: list[tuple[str, object]], language: str) -> str:
    """Return one line per file: verdict, sub-indication, signature count (or the error code)."""
    _ = gettext_for(language)
    rows = [(_("File"), _("Verdict"), _("Signatures"))]
    for path, result in results:
        if isinstance(result, Report):
            rows.append((path, verdict_text(result.verdict, result.sub_indication, _), str(len(result.signatures))))
        else:
            rows.append((path, _("error [{code}]").format(code=getattr(result, "code", "?")), "-"))
    widths = [max(_display_width(row[column]) for row in rows) for column in range(3)]
    lines = []
    for row in rows:
        cells = [cell + " " * (widths[column] - _display_width(cell)) for column, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _display_width(text: str) -> int:
    """Columns a terminal uses for ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)
