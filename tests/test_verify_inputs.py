"""``qsign verify`` on input it cannot verify: a stable error code and exit code 2, never a traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from verify_pki import real_pdf, signed_pdf, test_pki, verify_state  # noqa: F401  (fixtures)

from qsign.cli import main


def _encrypted_pdf(user_password: str) -> bytes:
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(real_pdf("xtu.pdf").read_bytes())))
    writer.encrypt("owner password", user_password)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def _make_input(kind: str, directory: Path, signed: Path) -> Path:
    """Write one kind of bad input under ``directory`` and return its path."""
    path = directory / f"{kind}.pdf"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("这不是 PDF 文件\n", encoding="utf-8")
    elif kind == "truncated":
        path.write_bytes(signed.read_bytes()[:4000])
    elif kind == "header_only":
        path.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    elif kind == "encrypted":
        path.write_bytes(_encrypted_pdf("user password"))
    elif kind == "garbage_p7s":
        path = directory / "garbage.p7s"
        path.write_bytes(b"\x30\x82\x01\x00" + b"\x00" * 40)
    elif kind == "pem_not_cms":
        path = directory / "cert.p7s"
        path.write_bytes(b"-----BEGIN PKCS7-----\nnot base64 at all!\n-----END PKCS7-----\n")
    return path


BAD_INPUTS = [
    ("missing", "input_not_found"),
    ("directory", "input_not_file"),
    ("empty", "input_empty"),
    ("text", "not_a_pdf"),
    ("truncated", "pdf_malformed"),
    ("header_only", "pdf_malformed"),
    ("encrypted", "pdf_encrypted"),
    ("garbage_p7s", "cms_malformed"),
    ("pem_not_cms", "cms_malformed"),
]


@pytest.mark.parametrize(("kind", "code"), BAD_INPUTS)
def test_bad_input_error_code(capsys, kind: str, code: str, signed_pdf: Path, verify_state: Path,
                              tmp_path: Path) -> None:
    path = _make_input(kind, tmp_path, signed_pdf)

    exit_code = main(["verify", str(path), "--state-dir", str(verify_state), "--json"])

    captured = capsys.readouterr()
    assert exit_code == 2
    assert json.loads(captured.out)["error"]["code"] == code
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("kind", "code"), BAD_INPUTS)
def test_bad_input_localized_message(capsys, kind: str, code: str, signed_pdf: Path, verify_state: Path,
                                     tmp_path: Path) -> None:
    path = _make_input(kind, tmp_path, signed_pdf)

    exit_code = main(["verify", str(path), "--state-dir", str(verify_state), "--lang", "zh_CN"])

    captured = capsys.readouterr()
    assert exit_code == 2
    assert captured.err.startswith(f"错误 [{code}]: ")
    assert "Traceback" not in captured.err


def test_empty_password_pdf_opens(capsys, verify_state: Path, tmp_path: Path) -> None:
    path = tmp_path / "open.pdf"
    path.write_bytes(_encrypted_pdf(""))

    exit_code = main(["verify", str(path), "--state-dir", str(verify_state), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert exit_code == 1
    assert report["errors"] == ["no_signatures"]


def test_bad_trust_file(capsys, signed_pdf: Path, tmp_path: Path) -> None:
    bad_anchor = tmp_path / "anchor.pem"
    bad_anchor.write_text("not a certificate", encoding="utf-8")

    exit_code = main(["verify", str(signed_pdf), "--state-dir", str(tmp_path), "--trust", str(bad_anchor),
                      "--json"])

    assert exit_code == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "trust_anchor_invalid"


def test_listen_without_serve(capsys, signed_pdf: Path, verify_state: Path) -> None:
    exit_code = main(["verify", str(signed_pdf), "--state-dir", str(verify_state), "--listen", "127.0.0.1:0"])

    assert exit_code == 2
    assert "invalid_input" in capsys.readouterr().err


def test_cli_subprocess_exit_codes(signed_pdf: Path, verify_state: Path, tmp_path: Path) -> None:
    """The installed entry point, not only ``main``: exit 0 for a valid PDF, 2 for a directory."""
    command = [sys.executable, "-m", "qsign.cli", "verify", "--state-dir", str(verify_state), "--json"]

    valid = subprocess.run([*command, str(signed_pdf)], capture_output=True, text=True, timeout=120)
    directory = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, timeout=120)

    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["verdict"] == "TOTAL_PASSED"
    assert directory.returncode == 2
    assert json.loads(directory.stdout)["error"]["code"] == "input_not_file"
    assert "Traceback" not in directory.stderr
