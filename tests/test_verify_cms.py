"""``qsign verify`` on CMS signature files (.p7s): detached with --content, and enveloping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asn1crypto import pem
from verify_pki import TestPki, real_pdf, sign_cms, test_pki, verify_state  # noqa: F401  (fixtures)

from qsign.cli import main


@pytest.fixture
def content_file(tmp_path: Path) -> Path:
    path = tmp_path / "notice.pdf"
    path.write_bytes(real_pdf("xtu.pdf").read_bytes())
    return path


@pytest.fixture
def detached_p7s(content_file: Path, test_pki: TestPki, tmp_path: Path) -> Path:
    path = tmp_path / "notice.pdf.p7s"
    path.write_bytes(sign_cms(content_file.read_bytes(), test_pki.signer, detached=True))
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    exit_code = main([*argv, "--json"])
    return exit_code, json.loads(capsys.readouterr().out)


def test_detached_matching_content_valid(capsys, detached_p7s: Path, content_file: Path,
                                         verify_state: Path) -> None:
    exit_code, report = run_json(capsys, "verify", str(detached_p7s), "--content", str(content_file),
                                 "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["format"] == "cms"
    assert report["content"]["name"] == content_file.name
    signature = report["signatures"][0]
    assert signature["kind"] == "cms_signature"
    assert signature["field"] is None
    assert signature["intact"] is True
    assert signature["valid"] is True
    assert signature["trusted"] is True
    assert signature["coverage"] is None


def test_detached_other_content_invalid(capsys, detached_p7s: Path, verify_state: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pdf"
    other.write_bytes(real_pdf("xiaoshan-sample.pdf").read_bytes())

    exit_code, report = run_json(capsys, "verify", str(detached_p7s), "--content", str(other),
                                 "--state-dir", str(verify_state))

    assert exit_code == 1
    assert report["verdict"] == "TOTAL_FAILED"
    signature = report["signatures"][0]
    assert signature["intact"] is False
    assert signature["sub_indication"] == "HASH_FAILURE"
    assert "digest_mismatch" in signature["errors"]


def test_detached_pem_armoured(capsys, detached_p7s: Path, content_file: Path, verify_state: Path,
                               tmp_path: Path) -> None:
    armoured = tmp_path / "notice.pem"
    armoured.write_bytes(pem.armor("PKCS7", detached_p7s.read_bytes()))

    exit_code, report = run_json(capsys, "verify", str(armoured), "--content", str(content_file),
                                 "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"


def test_detached_without_content(capsys, detached_p7s: Path, verify_state: Path) -> None:
    exit_code, output = run_json(capsys, "verify", str(detached_p7s), "--state-dir", str(verify_state))

    assert exit_code == 2
    assert output["error"]["code"] == "content_required"


def test_enveloping_valid(capsys, test_pki: TestPki, verify_state: Path, tmp_path: Path) -> None:
    enveloping = tmp_path / "notice.p7m"
    enveloping.write_bytes(sign_cms("国家税务总局通知".encode(), test_pki.signer, detached=False))

    exit_code, report = run_json(capsys, "verify", str(enveloping), "--state-dir", str(verify_state))

    assert exit_code == 0
    assert report["verdict"] == "TOTAL_PASSED"
    assert report["content"] is None
    assert report["signatures"][0]["intact"] is True
    assert report["signatures"][0]["valid"] is True


def test_enveloping_rejects_content(capsys, test_pki: TestPki, content_file: Path, verify_state: Path,
                                    tmp_path: Path) -> None:
    enveloping = tmp_path / "notice.p7m"
    enveloping.write_bytes(sign_cms(b"text", test_pki.signer, detached=False))

    exit_code, output = run_json(capsys, "verify", str(enveloping), "--content", str(content_file),
                                 "--state-dir", str(verify_state))

    assert exit_code == 2
    assert output["error"]["code"] == "content_not_expected"


def test_detached_untrusted(capsys, detached_p7s: Path, content_file: Path, test_pki: TestPki,
                            tmp_path: Path) -> None:
    exit_code, report = run_json(capsys, "verify", str(detached_p7s), "--content", str(content_file),
                                 "--state-dir", str(tmp_path), "--trust", str(test_pki.other_root_pem))

    assert exit_code == 1
    assert report["verdict"] == "INDETERMINATE"
    assert report["signatures"][0]["trusted"] is False
    assert report["trust"]["source"] == "arguments"


def test_changed_signature_value_invalid(capsys, detached_p7s: Path, content_file: Path, verify_state: Path,
                                         tmp_path: Path) -> None:
    """The signature value is the last field of a SignerInfo without unsigned attributes."""
    broken = tmp_path / "broken.p7s"
    data = bytearray(detached_p7s.read_bytes())
    data[-1] ^= 0x01
    broken.write_bytes(bytes(data))

    exit_code, report = run_json(capsys, "verify", str(broken), "--content", str(content_file),
                                 "--state-dir", str(verify_state))

    assert exit_code == 1
    assert report["verdict"] == "TOTAL_FAILED"
    signature = report["signatures"][0]
    assert signature["intact"] is True
    assert signature["valid"] is False
    assert signature["trusted"] is None
    assert signature["sub_indication"] == "SIG_CRYPTO_FAILURE"
    assert "signature_invalid" in signature["errors"]
