"""``qsign verify`` on signed PDFs: verdicts, exit codes, and the report fields per signature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from verify_pki import (  # noqa: F401  (fixtures)
    SIGNER_COMMON_NAME,
    TestPki,
    add_document_timestamp,
    append_page_content,
    real_pdf,
    sign_pdf_bytes,
    signed_pdf,
    test_pki,
    verify_state,
)

from qsign.cli import main
from verify_service.trust import trust_from_files
from verify_service.validate import verify_file


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    exit_code = main(list(argv))
    return exit_code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    exit_code, output = run_cli(capsys, *argv, "--json")
    return exit_code, json.loads(output)


def test_valid_signature_passes(capsys, signed_pdf: Path, verify_state: Path) -> None:
    exit_code, report = run_json(capsys, "verify", str(signed_pdf), "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["file"]["name"] == signed_pdf.name
    assert report["file"]["size"] == signed_pdf.stat().st_size
    assert len(report["signatures"]) == 1
    signature = report["signatures"][0]
    assert signature["field"] == "Signature1"
    assert signature["intact"] is True
    assert signature["valid"] is True
    assert signature["trusted"] is True
    assert signature["coverage"] == "entire_file"
    assert signature["modified_after"] is False
    assert signature["modifications"] == "none"
    assert signature["indication"] == "TOTAL_PASSED"
    assert signature["sub_indication"] is None
    assert signature["errors"] == []
    assert signature["digest_algorithm"] == "sha256"
    assert signature["signature_algorithm"] == "sha256_rsa"
    assert signature["revision"] == 1


def test_report_keeps_chinese_subject(capsys, signed_pdf: Path, verify_state: Path, test_pki: TestPki) -> None:
    _, output = run_cli(capsys, "verify", str(signed_pdf), "--state-dir", str(verify_state), "--json")

    assert "\\u" not in output
    report = json.loads(output)
    signature = report["signatures"][0]
    assert signature["signer"] == f"CN={SIGNER_COMMON_NAME},O=国家税务总局测试局,C=CN"
    assert signature["signer_certificate"]["issuer"].startswith("CN=qsign 测试中级 CA")
    assert len(signature["signer_certificate"]["sha256"]) == 64
    assert signature["signing_time"].startswith("20")
    assert [anchor["subject"] for anchor in report["trust"]["anchors"]] == ["CN=qsign 测试根 CA,O=国家税务总局测试局,C=CN"]
    assert report["trust"]["source"] == "config"
    assert report["trust"]["online"] is False


def test_untrusted_root_not_valid(capsys, signed_pdf: Path, test_pki: TestPki, tmp_path: Path) -> None:
    exit_code, report = run_json(capsys, "verify", str(signed_pdf), "--state-dir", str(tmp_path),
                                 "--trust", str(test_pki.other_root_pem))

    assert exit_code == 1
    assert report["verdict"] == "INDETERMINATE"
    signature = report["signatures"][0]
    assert signature["intact"] is True
    assert signature["valid"] is True
    assert signature["trusted"] is False
    assert signature["indication"] == "INDETERMINATE"
    assert signature["sub_indication"] == "NO_CERTIFICATE_CHAIN_FOUND"
    assert "no_certificate_chain_found" in signature["errors"]


def test_no_trust_anchors_indeterminate(capsys, signed_pdf: Path, tmp_path: Path) -> None:
    exit_code, report = run_json(capsys, "verify", str(signed_pdf), "--state-dir", str(tmp_path))

    assert exit_code == 1
    assert report["verdict"] == "INDETERMINATE"
    assert "no_trust_anchors" in report["errors"]
    assert report["signatures"][0]["trusted"] is False


def _flip_byte_in_signed_range(data: bytes) -> bytes:
    """Change one byte of the binary comment on the second line, which no parser reads."""
    offset = data.index(b"\n") + 2
    assert data[offset - 1:offset] == b"%"
    changed = bytearray(data)
    changed[offset] ^= 0x01
    return bytes(changed)


def test_changed_signed_byte_invalid(capsys, signed_pdf: Path, verify_state: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(_flip_byte_in_signed_range(signed_pdf.read_bytes()))

    exit_code, report = run_json(capsys, "verify", str(tampered), "--state-dir", str(verify_state))

    assert exit_code == 1
    assert report["verdict"] == "TOTAL_FAILED"
    signature = report["signatures"][0]
    assert signature["intact"] is False
    assert signature["indication"] == "TOTAL_FAILED"
    assert signature["sub_indication"] == "HASH_FAILURE"
    assert "digest_mismatch" in signature["errors"]


def test_page_change_after_signing(capsys, signed_pdf: Path, verify_state: Path, tmp_path: Path) -> None:
    modified = tmp_path / "modified.pdf"
    modified.write_bytes(append_page_content(signed_pdf.read_bytes()))

    exit_code, report = run_json(capsys, "verify", str(modified), "--state-dir", str(verify_state))

    assert exit_code == 1
    assert report["verdict"] != "TOTAL_PASSED"
    signature = report["signatures"][0]
    assert signature["intact"] is True
    assert signature["valid"] is True
    assert signature["modified_after"] is True
    assert signature["coverage"] == "entire_revision"
    assert signature["modifications"] == "other"
    assert signature["modifications_allowed"] is False
    assert "modified_after_signing" in signature["errors"]


def test_two_signatures(capsys, signed_pdf: Path, verify_state: Path, test_pki: TestPki,
                        tmp_path: Path) -> None:
    twice = tmp_path / "twice.pdf"
    twice.write_bytes(sign_pdf_bytes(signed_pdf.read_bytes(), test_pki.signer, "Signature2"))

    exit_code, report = run_json(capsys, "verify", str(twice), "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"
    first, second = report["signatures"]
    assert (first["field"], first["revision"]) == ("Signature1", 1)
    assert (second["field"], second["revision"]) == ("Signature2", 2)
    assert first["coverage"] == "entire_revision"
    assert first["modified_after"] is True
    assert first["modifications"] == "form_filling"
    assert first["indication"] == "TOTAL_PASSED"
    assert second["coverage"] == "entire_file"
    assert second["modified_after"] is False


def test_second_signature_tampered(signed_pdf: Path, test_pki: TestPki, tmp_path: Path) -> None:
    twice = sign_pdf_bytes(signed_pdf.read_bytes(), test_pki.signer, "Signature2")
    path = tmp_path / "twice-tampered.pdf"
    path.write_bytes(_flip_byte_in_signed_range(twice))
    trust = trust_from_files([test_pki.root_pem], [test_pki.intermediate_pem])

    report = verify_file(path, trust=trust)

    assert report.verdict == "TOTAL_FAILED"
    assert [signature.intact for signature in report.signatures] == [False, False]


def test_timestamps_reported(capsys, test_pki: TestPki, verify_state: Path, tmp_path: Path) -> None:
    """A signature with a signature timestamp, then a document timestamp in the next revision."""
    source = real_pdf("xiaoshan-sample.pdf").read_bytes()
    signed = sign_pdf_bytes(source, test_pki.signer, timestamper=test_pki.timestamper)
    path = tmp_path / "timestamped.pdf"
    path.write_bytes(add_document_timestamp(signed, test_pki.timestamper))

    exit_code, report = run_json(capsys, "verify", str(path), "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"
    signature, document_timestamp = report["signatures"]
    assert signature["kind"] == "pdf_signature"
    assert signature["timestamp"]["trusted"] is True
    assert signature["timestamp"]["tsa"].startswith("CN=qsign 测试时间戳服务")
    assert signature["modifications"] == "lta_updates"
    assert document_timestamp["kind"] == "document_timestamp"
    assert document_timestamp["field"] == "Timestamp1"
    assert document_timestamp["timestamp_time"] is not None
    assert document_timestamp["trusted"] is True
    assert document_timestamp["coverage"] == "entire_file"


def test_timestamp_untrusted_indeterminate(test_pki: TestPki, tmp_path: Path) -> None:
    """The signer chains to the anchor but the TSA does not, so the verdict is not valid."""
    source = real_pdf("xiaoshan-sample.pdf").read_bytes()
    path = tmp_path / "timestamped.pdf"
    path.write_bytes(sign_pdf_bytes(source, test_pki.signer, timestamper=test_pki.untrusted_timestamper))
    trust = trust_from_files([test_pki.root_pem], [test_pki.intermediate_pem])

    report = verify_file(path, trust=trust)

    signature = report.signatures[0]
    assert signature.trusted is True
    assert signature.timestamp is not None
    assert signature.timestamp.valid is True
    assert signature.timestamp.trusted is False
    assert "timestamp_untrusted" in signature.errors
    assert (signature.indication, signature.sub_indication) == ("INDETERMINATE", "NO_POE")
    assert (report.verdict, report.sub_indication) == ("INDETERMINATE", "NO_POE")


def test_unsigned_pdf_indeterminate(capsys, verify_state: Path) -> None:
    unsigned = real_pdf("xtu.pdf")

    exit_code, report = run_json(capsys, "verify", str(unsigned), "--state-dir", str(verify_state))

    assert exit_code == 1
    assert report["verdict"] == "INDETERMINATE"
    assert report["signatures"] == []
    assert report["errors"] == ["no_signatures"]


@pytest.mark.parametrize("name", ["fduthesis-en.pdf", "upzhfandolfonts-test.pdf", "xtu.pdf"])
def test_real_pdfs_signed_valid(name: str, test_pki: TestPki, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(sign_pdf_bytes(real_pdf(name).read_bytes(), test_pki.signer))
    trust = trust_from_files([test_pki.root_pem], [test_pki.intermediate_pem])

    report = verify_file(path, trust=trust)

    assert report.verdict == "TOTAL_PASSED", report.to_json()


@pytest.mark.parametrize(("language", "expected"), [("zh_CN", "结论：TOTAL_PASSED（通过）"), ("en", "Verdict: TOTAL_PASSED (passed)")])
def test_text_summary_localized(capsys, signed_pdf: Path, verify_state: Path, language: str,
                                expected: str) -> None:
    exit_code, output = run_cli(capsys, "verify", str(signed_pdf), "--state-dir", str(verify_state),
                                "--lang", language)

    assert exit_code == 0
    assert expected in output
    assert SIGNER_COMMON_NAME in output
