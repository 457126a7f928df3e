"""The text that ``qsign softhsm init`` prints: files written, tokens, keys, certificates, test PINs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from qsign.i18n import N_, translate
from softhsm_setup.files import Status
from softhsm_setup.report import InitReport
from softhsm_setup.specs import TEST_SO_PIN, TEST_USER_PIN

__all__ = ["TEST_PIN_WARNING", "format_report", "pin_warning_lines", "report_json"]

TEST_PIN_WARNING = N_("WARNING: these are TEST PINs, published in the qsign source code. "
                      "Use these tokens for tests and demonstrations only, never for real documents.")

_STATUS_TEXT = {
    Status.CREATED: N_("created"),
    Status.UPDATED: N_("updated"),
    Status.EXISTS: N_("exists"),
}

_ROLE_TEXT = {
    "root-ca": N_("root CA"),
    "intermediate-ca": N_("intermediate CA"),
    "tsa": N_("time-stamping authority (TSA)"),
}


def pin_warning_lines() -> list[str]:
    """Return the test PIN warning in English and in Chinese, whatever the output language."""
    return [translate(TEST_PIN_WARNING, "en"), translate(TEST_PIN_WARNING, "zh_CN")]


def _status(status: Status, language: str) -> str:
    return translate(_STATUS_TEXT[status], language)


def _file_lines(report: InitReport, language: str) -> list[str]:
    if not report.files_written:
        return [translate("No file was written.", language)]
    lines = [translate("Files written:", language)]
    lines += [f"  {path}" for path in report.files_written]
    return lines


def _token_lines(report: InitReport, language: str) -> list[str]:
    lines = [translate("Tokens:", language)]
    for token in report.tokens:
        serial = translate("serial {serial}", language, serial=token.serial)
        lines.append(f"  {token.label}  {serial}  {_status(token.status, language)}")
    return lines


def _key_lines(report: InitReport, language: str) -> list[str]:
    lines = [translate("Keys (generated on the token, not extractable):", language)]
    for key in report.keys:
        size = f"RSA-{key.bits}" if key.key_type == "rsa" else f"EC {key.curve}"
        fields = [f"{key.token_label}/{key.label}", size, f"CKA_ID {key.key_id.hex()}"]
        if key.always_authenticate:
            fields.append("CKA_ALWAYS_AUTHENTICATE")
        fields.append(_status(key.status, language))
        lines.append("  " + "  ".join(fields))
    return lines


def _certificate_lines(report: InitReport, language: str) -> list[str]:
    lines = [translate("Certificates:", language)]
    for certificate in report.certificates:
        if certificate.token_label is None:
            name = translate(_ROLE_TEXT[certificate.role], language)
        else:
            name = f"{certificate.token_label}/{certificate.label}"
        lines.append(f"  {name}  {certificate.subject}  {certificate.path}  "
                     f"{_status(certificate.status, language)}")
    return lines


def _pin_lines(report: InitReport, language: str) -> list[str]:
    lines = pin_warning_lines()
    for token in report.tokens:
        if token.uses_test_pins:
            text = translate("{token}: user PIN {user_pin} ({pin_file}), SO PIN {so_pin} ({so_pin_file})",
                             language, token=token.label, user_pin=TEST_USER_PIN, pin_file=token.pin_file,
                             so_pin=TEST_SO_PIN, so_pin_file=token.so_pin_file)
        else:
            text = translate("{token}: PINs in {pin_file} and {so_pin_file}", language, token=token.label,
                             pin_file=token.pin_file, so_pin_file=token.so_pin_file)
        lines.append(f"  {text}")
    return lines


def _summary_lines(report: InitReport, language: str) -> list[str]:
    counts = Counter(item.status for item in (*report.tokens, *report.keys, *report.certificates))
    lines = [translate("Summary: {created} created, {updated} updated, {existing} already existed; "
                       "{files} files written.", language, created=counts[Status.CREATED],
                       updated=counts[Status.UPDATED], existing=counts[Status.EXISTS],
                       files=len(report.files_written))]
    if not report.changed:
        lines.append(translate("Nothing changed: the state dir was already complete.", language))
    return lines


def format_report(report: InitReport, language: str) -> str:
    """Return the human-readable report of ``init_state`` in ``language``, ending in a newline."""
    config_line = translate("Configuration: {path}  {status}", language, path=report.config_path,
                            status=_status(report.config_status, language))
    sections = [
        _file_lines(report, language),
        _token_lines(report, language),
        _key_lines(report, language),
        _certificate_lines(report, language),
        [config_line],
        _pin_lines(report, language),
        _summary_lines(report, language),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def report_json(report: InitReport) -> dict[str, Any]:
    """Return ``report.to_dict()`` with the test PINs and their warning, for ``--json``."""
    data = report.to_dict()
    data["test_pins"] = {
        "user_pin": TEST_USER_PIN,
        "so_pin": TEST_SO_PIN,
        "warning": {"en": translate(TEST_PIN_WARNING, "en"), "zh_CN": translate(TEST_PIN_WARNING, "zh_CN")},
    }
    return data
