"""``qsign demo`` end to end, checked against an independent validator (the ``pyhanko`` CLI)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_qsign

DEMO_TIMEOUT = 300


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    state_dir = tmp_path_factory.mktemp("demo-state")

    # The demo serves its test PKI on the port of [pki] base_url (8471 unless set). A free port keeps
    # this test independent of whatever else holds 8471 on the machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    initialized = run_qsign("softhsm", "init", "--pki-base-url", f"http://127.0.0.1:{port}", state_dir=state_dir)
    assert initialized.returncode == 0, initialized.stderr

    completed = run_qsign("demo", state_dir=state_dir, timeout=DEMO_TIMEOUT)
    return completed, state_dir


def _signed_file(stdout: str) -> Path:
    match = re.search(r"^\s*Signed file: (.+)$", stdout, re.MULTILINE)
    assert match, f"no 'Signed file:' line in the demo output:\n{stdout}"
    return Path(match.group(1).strip())


def test_demo_exits_zero(demo_run):
    completed, _ = demo_run

    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"


def test_demo_prints_existing_paths(demo_run):
    completed, state_dir = demo_run
    printed = [Path(line.strip()) for line in completed.stdout.splitlines()
               if line.strip().startswith(str(state_dir))]

    assert len(printed) >= 5
    for path in printed:
        assert path.exists(), f"the demo printed {path}, which does not exist"


def test_demo_summary_is_bilingual(demo_run):
    completed, _ = demo_run

    assert "摘要" in completed.stdout
    assert "Summary" in completed.stdout
    assert "已签名文件" in completed.stdout


def test_demo_signatures_valid_per_service(demo_run):
    completed, state_dir = demo_run
    reports = list(state_dir.rglob("verification-report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text(encoding="utf-8"))

    signatures = [signature for signature in report["signatures"] if signature["kind"] == "pdf_signature"]
    timestamps = [signature for signature in report["signatures"] if signature["kind"] == "document_timestamp"]
    assert len(signatures) == 2
    assert len(timestamps) == 1
    for signature in signatures + timestamps:
        assert signature["intact"] is True
        assert signature["valid"] is True
        assert signature["trusted"] is True
    # The officer's B-B signature gains a time from the seal's document timestamp. The DSS has
    # revocation data for the seal only, so the officer's signature stays B-T and the seal is B-LTA.
    assert [signature["level"] for signature in signatures] == ["B-T", "B-LTA"]
    assert report["verdict"] == "TOTAL_PASSED"


@pytest.fixture
def served_pki(demo_run):
    """Serve the demo state's OCSP responder and CRLs on 127.0.0.1 while a test runs."""
    _, state_dir = demo_run
    server = subprocess.Popen([sys.executable, "-m", "qsign.cli", "softhsm", "serve-pki", "--lang", "en",
                               "--state-dir", str(state_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The TSA line is printed last, once the server listens.
        for line in server.stdout:
            if line.strip().startswith("TSA"):
                break
        else:
            pytest.fail(f"serve-pki ended early: {server.stderr.read()}")
        yield
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_demo_output_valid_per_pyhanko_cli(demo_run, served_pki):
    completed, state_dir = demo_run
    signed = _signed_file(completed.stdout)
    pyhanko = shutil.which("pyhanko") or str(Path(sys.executable).parent / "pyhanko")

    # Revocation is checked online, against the demo's own OCSP responder and CRLs.
    validated = subprocess.run(
        [pyhanko, "sign", "validate", "--trust-replace",
         "--trust", str(state_dir / "pki" / "root-ca.pem"),
         "--other-certs", str(state_dir / "pki" / "intermediate-ca.pem"),
         "--executive-summary", str(signed)],
        capture_output=True, text=True, timeout=120, check=False)

    lines = [line for line in validated.stdout.splitlines() if line.strip()]
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert len(lines) == 2
    for line in lines:
        assert line.endswith(":VALID"), line


def test_demo_archive_encrypted_and_intact(demo_run):
    completed, state_dir = demo_run
    stored = [path for path in (state_dir / "archive" / "documents").rglob("*") if path.is_file()]

    verified = run_qsign("archive", "verify", "--json", state_dir=state_dir)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert len(stored) >= 3
    for path in stored:
        assert not path.read_bytes().startswith(b"%PDF"), f"{path} is stored in plaintext"
