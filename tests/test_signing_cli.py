"""``qsign sign`` in a subprocess, with the PIN from QSIGN_PIN, --pin-file or the profile."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_qsign
from helpers.signing_checks import validate_pdf
from test_signing_cades import OPENSSL, openssl_verify

XTU = Path(__file__).parent / "data" / "real" / "xtu.pdf"
MULTI_PAGE = Path(__file__).parent / "data" / "real" / "fduthesis-en.pdf"


def officer_pin(state_dir: Path) -> str:
    return (state_dir / "secrets" / "officer.pin").read_text(encoding="utf-8").splitlines()[0]


def no_pin_environment() -> dict[str, str]:
    # QSIGN_LANG takes precedence over --lang, so clear it for the tests that pass --lang.
    return {"QSIGN_PIN": "", "QSIGN_LANG": ""}


def test_cli_sign_with_qsign_pin(softhsm_state, tmp_path):
    output = tmp_path / "signed.pdf"

    completed = run_qsign("sign", str(XTU), "--token", "qsign-officer", "--key", "officer-rsa", "-o", str(output),
                          "--reason", "审批", "--json", state_dir=softhsm_state,
                          env={"QSIGN_PIN": officer_pin(softhsm_state)})

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["output"] == str(output)
    assert result["format"] == "pades"
    assert result["mechanism"] == "sha256_rsa"
    assert result["signer"] == "张伟"
    (status,) = validate_pdf(output, softhsm_state)
    assert status.bottom_line


def test_cli_sign_with_pin_file_visible(softhsm_state, tmp_path):
    output = tmp_path / "signed.pdf"

    completed = run_qsign("sign", str(MULTI_PAGE), "--token", "qsign-officer", "--key", "officer-ec",
                          "--pin-file", str(softhsm_state / "secrets" / "officer.pin"), "--visible",
                          "--page", "-1", "--rect", "380,60,540,220", "-o", str(output), "--lang", "zh_CN",
                          state_dir=softhsm_state, env=no_pin_environment())

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == str(output)
    assert "已用李娜的密钥 officer-ec" in lines[1]
    (status,) = validate_pdf(output, softhsm_state)
    assert status.bottom_line


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_cli_profile_cades_for_non_pdf(softhsm_state, tmp_path):
    content = tmp_path / "report.xml"
    content.write_text("<report>税款</report>\n", encoding="utf-8")
    output = tmp_path / "report.xml.p7s"

    completed = run_qsign("sign", str(content), "--profile", "seal_ec", "-o", str(output), "--json",
                          state_dir=softhsm_state, env=no_pin_environment())

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["format"] == "cades"
    assert result["mechanism"] == "sha384_ecdsa"
    verified = openssl_verify(output, content, softhsm_state)
    assert verified.returncode == 0, verified.stderr


def test_cli_pin_required_without_source(softhsm_state, tmp_path):
    output = tmp_path / "signed.pdf"

    completed = run_qsign("sign", str(XTU), "--token", "qsign-officer", "--key", "officer-rsa", "-o", str(output),
                          "--json", state_dir=softhsm_state, env=no_pin_environment(), input="")

    assert completed.returncode != 0
    assert json.loads(completed.stdout)["error"]["code"] == "pin_required"
    assert not output.exists()


def test_cli_pin_never_printed(softhsm_state, tmp_path):
    pin = officer_pin(softhsm_state)
    bad_input = tmp_path / "bad.pdf"
    bad_input.write_bytes(XTU.read_bytes()[:5000])

    good = run_qsign("sign", str(XTU), "--profile", "officer_qualified", "-o", str(tmp_path / "ok.pdf"),
                     "--verbose", state_dir=softhsm_state, env={"QSIGN_PIN": pin})
    bad = run_qsign("sign", str(bad_input), "--profile", "officer", "-o", str(tmp_path / "bad-signed.pdf"),
                    "--verbose", "--json", state_dir=softhsm_state, env={"QSIGN_PIN": pin})

    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0
    assert json.loads(bad.stdout)["error"]["code"] == "pdf_malformed"
    for text in (good.stdout, good.stderr, bad.stdout, bad.stderr):
        assert pin not in text
    assert not (tmp_path / "bad-signed.pdf").exists()


def test_cli_rejects_pdf_options_for_cades(softhsm_state, tmp_path):
    content = tmp_path / "data.bin"
    content.write_bytes(os.urandom(100))

    completed = run_qsign("sign", str(content), "--profile", "officer", "--visible", "-o", str(tmp_path / "x.p7s"),
                          "--json", state_dir=softhsm_state, env=no_pin_environment())

    assert completed.returncode == 2
    assert json.loads(completed.stdout)["error"]["code"] == "option_not_applicable"


def test_cli_missing_key_selection(softhsm_state, tmp_path):
    completed = run_qsign("sign", str(XTU), "-o", str(tmp_path / "x.pdf"), "--json",
                          state_dir=softhsm_state, env=no_pin_environment())

    assert completed.returncode == 2
    assert json.loads(completed.stdout)["error"]["code"] == "config_invalid"
