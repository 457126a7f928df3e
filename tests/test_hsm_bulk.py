"""Bulk sealing (``qsign bulk``) on the SoftHSM2 seal keys: outputs, records, kills and resume, bad input.

The jobs run the ``qsign`` CLI in subprocesses, as an operator would, with the session's state dir.
Each test uses its own input and output directories and its own job. The tests that verify with
revocation data or seal at level B-T use ``pki_state``: a state dir of this module whose certificates
name a test PKI (OCSP responder, CRLs, TSA) on a free port of 127.0.0.1, served for the module.
Another test run may hold port 8471, which the session's state dir names.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import shutil
import socket
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archive.api import Archive
from hsm.errors import ZipUnsafe
from hsm.inputs import ZipLimits, extract_zip
from qsign.config import load_config
from softhsm_setup.pki_server import PkiServer
from conftest import run_qsign
from helpers.signing_checks import make_encrypted_pdf, validate_pdf
from verify_service.trust import trust_from_config
from verify_service.validate import verify_file

REAL = Path(__file__).parent / "data" / "real"
SAMPLE = REAL / "xiaoshan-sample.pdf"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pki_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir whose test PKI is served on a free port for the module, with a B-T profile ``seal_bt``."""
    state_dir = tmp_path_factory.mktemp("bulk-pki-state")
    port = _free_port()
    completed = run_qsign("softhsm", "init", "--json", "--pki-base-url", f"http://127.0.0.1:{port}",
                          state_dir=state_dir)
    assert completed.returncode == 0, completed.stderr
    config_path = state_dir / "qsign.toml"
    config_path.write_text(config_path.read_text(encoding="utf-8")
                           + '\n[profiles.seal_bt]\ntoken = "seal"\nlevel = "B-T"\n', encoding="utf-8")
    server = PkiServer(state_dir, "127.0.0.1", port).start()
    yield state_dir
    server.stop()


def _make_inputs(directory: Path, copies: int) -> list[str]:
    """Write ``copies`` copies of the sample plus two other real PDFs; return the item keys."""
    directory.mkdir(parents=True)
    for number in range(copies):
        shutil.copyfile(SAMPLE, directory / f"notice-{number:03d}.pdf")
    (directory / "sub").mkdir()
    shutil.copyfile(REAL / "xtu.pdf", directory / "sub" / "xtu.pdf")
    shutil.copyfile(REAL / "upzhfandolfonts-test.pdf", directory / "upzhfandolfonts-test.pdf")
    return sorted(f"{directory.name}/{path.relative_to(directory)}" for path in directory.rglob("*.pdf"))


def _bulk(state_dir: Path, *args: str, env: dict[str, str] | None = None):
    return run_qsign("bulk", *args, "--lang", "en", state_dir=state_dir, env=env, timeout=180)


def _job_id(completed) -> str:
    return json.loads(completed.stdout.splitlines()[0])["job"]


def _status(state_dir: Path, job_id: str) -> dict:
    completed = _bulk(state_dir, "status", job_id, "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _check_job(state_dir: Path, job_id: str, out_dir: Path, sealed_keys: list[str], *, qsign_verify: bool = False):
    """Check the finished job: outputs, manifest, archive records and audit entries all agree."""
    status = _status(state_dir, job_id)
    assert status["state"] == "finished"
    assert status["counts"]["pending"] == 0
    assert status["counts"]["recorded"] == len(sealed_keys)

    manifest = [json.loads(line) for line in Path(status["manifest"]).read_text(encoding="utf-8").splitlines()]
    recorded = {entry["item"]: entry for entry in manifest if entry["status"] == "recorded"}
    assert sorted(recorded) == sorted(sealed_keys)

    outputs = {path for path in out_dir.rglob("*") if path.is_file() and not path.name.startswith("manifest-")}
    assert outputs == {Path(entry["output"]) for entry in recorded.values()}, "missing, extra or partial output files"
    assert not (out_dir / ".qsign-partial" / job_id).exists()

    with Archive.open(state_dir) as archive:
        with archive.transaction() as tx:
            items = {item.item_key: item for item in tx.get_job_items(job_id)}
        sealed_entries = [entry for entry in archive.audit_entries(action="bulk.document_sealed")
                          if entry.object_ids.get("job_id") == job_id]
        for key, entry in recorded.items():
            output = Path(entry["output"])
            digest = hashlib.sha256(output.read_bytes()).hexdigest()
            assert digest == entry["output_sha256"] == items[key].output_sha256
            assert entry["input_sha256"] == hashlib.sha256(Path(entry["input"]).read_bytes()).hexdigest()
            assert archive.get_document(digest) is not None
            assert archive.get_document(entry["input_sha256"]) is not None
        assert sorted(e.object_ids["item"] for e in sealed_entries) == sorted(sealed_keys), "one audit entry per document"

    config_trust = None
    for entry in recorded.values():
        statuses = validate_pdf(Path(entry["output"]), state_dir)
        assert len(statuses) == 1, f"{entry['item']} carries {len(statuses)} signatures"
        assert statuses[0].bottom_line, f"{entry['item']}: {statuses[0].summary()}"
        if qsign_verify:
            if config_trust is None:
                config_trust = trust_from_config(load_config(state_dir), online=True)
            report = verify_file(entry["output"], trust=config_trust)
            assert str(report.verdict.value if hasattr(report.verdict, "value") else report.verdict) == "TOTAL_PASSED", entry["item"]
    return status


def test_bulk_seals_directory(pki_state, tmp_path):
    keys = _make_inputs(tmp_path / "in", 4)

    completed = _bulk(pki_state, "sign", str(tmp_path / "in"), "--profile", "seal", "--out",
                      str(tmp_path / "out"), "--json")

    assert completed.returncode == 0, completed.stderr
    job_id = _job_id(completed)
    assert json.loads(completed.stdout.splitlines()[-1])["result"]["counts"]["recorded"] == len(keys)
    status = _check_job(pki_state, job_id, tmp_path / "out", keys, qsign_verify=True)
    sample = json.loads(Path(status["manifest"]).read_text(encoding="utf-8").splitlines()[0])
    checked = _pyhanko_cli_validate(pki_state, Path(sample["output"]))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ":VALID" in checked.stdout, checked.stdout


def test_bulk_ec_profile_with_globs(pki_state, tmp_path):
    _make_inputs(tmp_path / "in", 3)

    completed = _bulk(pki_state, "sign", str(tmp_path / "in"), "--profile", "seal_ec", "--out",
                      str(tmp_path / "out"), "--include", "notice-*", "--exclude", "notice-001.pdf", "--json")

    assert completed.returncode == 0, completed.stderr
    _check_job(pki_state, _job_id(completed), tmp_path / "out", ["in/notice-000.pdf", "in/notice-002.pdf"],
               qsign_verify=True)


def test_bulk_mixed_batch(softhsm_state, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(SAMPLE, inputs / "good.pdf")
    (inputs / "truncated.pdf").write_bytes(SAMPLE.read_bytes()[:3000])
    (inputs / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    (inputs / "letter.txt").write_text("not a PDF", encoding="utf-8")
    (inputs / "empty.pdf").write_bytes(b"")
    make_encrypted_pdf(SAMPLE, inputs / "locked.pdf", b"user", b"owner")

    completed = _bulk(softhsm_state, "sign", str(inputs), "--profile", "seal", "--out", str(tmp_path / "out"),
                      "--json")

    assert completed.returncode == 1, completed.stderr
    status = _check_job(softhsm_state, _job_id(completed), tmp_path / "out", ["in/good.pdf"])
    manifest = [json.loads(line) for line in Path(status["manifest"]).read_text(encoding="utf-8").splitlines()]
    codes = {entry["item"]: entry["error_code"] for entry in manifest}
    assert codes["in/good.pdf"] is None
    assert codes["in/truncated.pdf"] == "pdf_malformed"
    assert codes["in/garbage.pdf"] == "pdf_malformed"
    assert codes["in/letter.txt"] == "not_a_pdf"
    assert codes["in/empty.pdf"] == "input_empty"
    assert codes["in/locked.pdf"] == "pdf_encrypted"
    # An input that failed after it was copied is recorded by its hash, so no stored file lacks a record.
    with Archive.open(softhsm_state) as archive:
        with archive.transaction() as tx:
            items = {item.item_key: item for item in tx.get_job_items(status["job"])}
        truncated_sha256 = hashlib.sha256((inputs / "truncated.pdf").read_bytes()).hexdigest()
        assert items["in/truncated.pdf"].input_sha256 == truncated_sha256
        assert archive.get_document(truncated_sha256) is not None


def test_bulk_never_replaces_existing_output(softhsm_state, tmp_path):
    _make_inputs(tmp_path / "in", 1)
    existing = tmp_path / "out" / "in" / "notice-000.pdf"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"keep me")

    completed = _bulk(softhsm_state, "sign", str(tmp_path / "in"), "--profile", "seal", "--out",
                      str(tmp_path / "out"), "--json")

    assert completed.returncode == 1
    assert existing.read_bytes() == b"keep me"
    status = _status(softhsm_state, _job_id(completed))
    assert status["counts"] == {"pending": 0, "recorded": 2, "failed": 1}


# Kill points: (point, role). The pass count is drawn at random for each run.
_KILLS = [("prepared", "worker"), ("before-sign", "worker"), ("after-sign", "worker"), ("before-rename", "worker"),
          ("before-publish", "worker"), ("after-publish", "worker"), ("after-store", "worker"),
          ("before-record", "parent"), ("after-record", "parent"), ("after-plan", "parent")]


@pytest.mark.parametrize("run", range(10))
def test_bulk_kill_and_resume(softhsm_state, tmp_path, run):
    seed = random.Random(7000 + run)
    point, role = _KILLS[run]
    keys = _make_inputs(tmp_path / "in", 6)
    # A worker passes each point once per document; a small job may commit in one batch.
    env = {"QSIGN_BULK_KILL_AT": f"{point}:{seed.randint(1, 4) if role == 'worker' else 1}",
           "QSIGN_BULK_KILL_ROLE": role, "QSIGN_BULK_KILL_MARKER": str(tmp_path / "killed")}

    first = _bulk(softhsm_state, "sign", str(tmp_path / "in"), "--profile", "seal", "--out", str(tmp_path / "out"),
                  "--workers", "2", "--json", env=env)
    job_id = _job_id(first)
    assert (tmp_path / "killed").exists(), "the kill point was never reached"
    if role != "worker":
        assert first.returncode == -9, first.stderr
        assert _status(softhsm_state, job_id)["state"] in ("ready", "running")

    resumed = _bulk(softhsm_state, "resume", job_id, "--json")

    assert resumed.returncode == 0, resumed.stderr
    _check_job(softhsm_state, job_id, tmp_path / "out", keys)


def _pyhanko_cli_validate(state_dir: Path, path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "pyhanko"), "sign", "validate", "--trust-replace", "--trust",
               str(state_dir / "pki" / "root-ca.pem"), "--executive-summary", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_bulk_b_t_signature_timestamp(pki_state, tmp_path):
    keys = _make_inputs(tmp_path / "in", 3)

    completed = _bulk(pki_state, "sign", str(tmp_path / "in"), "--profile", "seal_bt", "--out",
                      str(tmp_path / "out"), "--workers", "2", "--json")

    assert completed.returncode == 0, completed.stderr
    status = _check_job(pki_state, _job_id(completed), tmp_path / "out", keys, qsign_verify=True)
    manifest = [json.loads(line) for line in Path(status["manifest"]).read_text(encoding="utf-8").splitlines()]
    trust = trust_from_config(load_config(pki_state), online=True)
    for entry in manifest:
        output = Path(entry["output"])
        statuses = validate_pdf(output, pki_state)
        timestamp = statuses[0].timestamp_validity
        assert timestamp is not None, f"{entry['item']} has no signature timestamp"
        assert timestamp.intact and timestamp.valid, entry["item"]
        assert timestamp.trusted, entry["item"]
        report = verify_file(output, trust=trust)
        assert report.signatures[0].level.value == "B-T", entry["item"]
    for entry in manifest[:2]:
        checked = _pyhanko_cli_validate(pki_state, Path(entry["output"]))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert ":VALID" in checked.stdout, checked.stdout


def test_bulk_resume_last(softhsm_state, tmp_path):
    keys = _make_inputs(tmp_path / "in", 2)
    first = _bulk(softhsm_state, "sign", str(tmp_path / "in"), "--profile", "seal", "--out", str(tmp_path / "out"),
                  "--json", env={"QSIGN_BULK_KILL_AT": "after-plan:1", "QSIGN_BULK_KILL_ROLE": "parent"})
    assert first.returncode == -9

    resumed = _bulk(softhsm_state, "resume", "--last", "--json")

    assert resumed.returncode == 0, resumed.stderr
    assert _job_id(resumed) == _job_id(first)
    _check_job(softhsm_state, _job_id(first), tmp_path / "out", keys)


def test_bulk_session_loss(softhsm_state, tmp_path):
    keys = _make_inputs(tmp_path / "in", 6)

    completed = _bulk(softhsm_state, "sign", str(tmp_path / "in"), "--profile", "seal", "--out",
                      str(tmp_path / "out"), "--workers", "2", "--json", env={"QSIGN_BULK_DROP_SESSION": "3"})

    assert completed.returncode == 0, completed.stderr
    assert "opening it again and retrying" in completed.stderr
    _check_job(softhsm_state, _job_id(completed), tmp_path / "out", keys)


def _copy_state(source: Path, destination: Path) -> Path:
    """Copy the session's tokens, PKI and config to a state dir of its own, with an empty archive."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("archive", "hsm"))
    conf = destination / "softhsm" / "softhsm2.conf"
    conf.write_text(conf.read_text(encoding="utf-8").replace(str(source), str(destination)), encoding="utf-8")
    return destination


def test_bulk_token_removed_mid_batch(softhsm_state, tmp_path):
    """The token directory goes away while the worker has a session open, and comes back before the resume."""
    state_dir = _copy_state(softhsm_state, tmp_path / "state")
    keys = _make_inputs(tmp_path / "in", 10)
    pause = tmp_path / "pause"
    pause.mkdir()
    # The worker stops before its third signature: two documents are sealed, the rest of its chunk is in flight.
    env = {"QSIGN_BULK_PAUSE_AT": "before-sign:3", "QSIGN_BULK_PAUSE_DIR": str(pause)}
    tokens = state_dir / "softhsm" / "tokens"
    away = state_dir / "softhsm" / "tokens-away"

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(_bulk, state_dir, "sign", str(tmp_path / "in"), "--profile", "seal", "--out",
                                  str(tmp_path / "out"), "--workers", "1", "--json", env=env)
        deadline = time.monotonic() + 120
        while not (pause / "paused").exists():
            assert not running.done(), "the job ended before the worker reached its third signature"
            assert time.monotonic() < deadline, "the worker never reached its third signature"
            time.sleep(0.05)
        tokens.rename(away)
        tokens.mkdir()
        try:
            (pause / "resume").touch()
            first = running.result(timeout=180)
        finally:
            tokens.rmdir()
            away.rename(tokens)

    assert first.returncode != 0, first.stdout
    assert "opening it again and retrying" in first.stderr
    assert "token_lost" in first.stdout + first.stderr
    job_id = _job_id(first)
    status = _status(state_dir, job_id)
    assert status["counts"]["recorded"] == 2
    assert status["counts"]["pending"] > 0, "the documents not yet sent to the worker wait for the resume"
    with Archive.open(state_dir) as archive:
        with archive.transaction() as tx:
            failed = [item for item in tx.get_job_items(job_id) if item.state == "failed"]
        failure_entries = [entry for entry in archive.audit_entries(action="bulk.document_failed")
                   if entry.object_ids.get("job_id") == job_id]
    assert len(failed) == 6, "the in-flight rest of the first chunk fails after one retry"
    assert {item.error_code for item in failed} <= {"device_removed", "session_closed", "token_not_present"}
    assert len(failure_entries) == len(failed)
    assert not any((tmp_path / "out" / Path(item.item_key)).exists() for item in failed)

    resumed = _bulk(state_dir, "resume", job_id, "--json")

    assert resumed.returncode == 1, resumed.stderr  # 1: the job finished with failed documents
    assert _status(state_dir, job_id)["state"] == "finished", resumed.stdout[-3000:] + resumed.stderr[-3000:]
    failed_keys = {item.item_key for item in failed}
    status = _check_job(state_dir, job_id, tmp_path / "out", [key for key in keys if key not in failed_keys])
    assert status["counts"]["failed"] == 6


def _zip_with(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return path


def test_zip_rejects_unsafe_names(tmp_path):
    link = zipfile.ZipInfo("link.pdf")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with(tmp_path / "names.zip", [
        ("ok/a.pdf", b"%PDF-1.4 a"), ("../escape.pdf", b"x"), ("/etc/evil.pdf", b"x"),
        ("a/../../escape2.pdf", b"x"), (link, b"/etc/passwd"),
    ])

    extracted, rejected = extract_zip(archive, tmp_path / "out")

    assert [name for name, _ in extracted] == ["ok/a.pdf"]
    assert sorted(name for name, _ in rejected) == ["../escape.pdf", "/etc/evil.pdf", "a/../../escape2.pdf", "link.pdf"]
    assert not (tmp_path / "escape.pdf").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["a.pdf"]


@pytest.mark.parametrize("limits, entries", [
    (ZipLimits(), [("bomb.pdf", b"\0" * (40 * 1024 * 1024))]),
    (ZipLimits(max_entries=3), [(f"{n}.pdf", b"%PDF-1.4") for n in range(4)]),
    (ZipLimits(max_total_bytes=1000, max_ratio=1e9), [("a.pdf", b"1" * 600), ("b.pdf", b"2" * 600)]),
], ids=["ratio", "entries", "total-size"])
def test_zip_limits(tmp_path, limits, entries):
    archive = _zip_with(tmp_path / "bomb.zip", entries)

    with pytest.raises(ZipUnsafe):
        extract_zip(archive, tmp_path / "out", limits)

    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_bulk_zip_input(softhsm_state, tmp_path):
    archive = _zip_with(tmp_path / "batch.zip", [
        ("2026/notice.pdf", SAMPLE.read_bytes()), ("../../escape.pdf", SAMPLE.read_bytes()),
    ])
    bomb = _zip_with(tmp_path / "bomb.zip", [("big.pdf", b"%PDF-1.4\n" + b"\0" * (40 * 1024 * 1024))])

    completed = _bulk(softhsm_state, "sign", str(archive), str(bomb), "--profile", "seal", "--out",
                      str(tmp_path / "out"), "--json")

    assert completed.returncode == 1
    status = _check_job(softhsm_state, _job_id(completed), tmp_path / "out", ["batch.zip/2026/notice.pdf"])
    manifest = [json.loads(line) for line in Path(status["manifest"]).read_text(encoding="utf-8").splitlines()]
    codes = {entry["item"]: entry["error_code"] for entry in manifest}
    assert codes == {"batch.zip/2026/notice.pdf": None, "batch.zip/../../escape.pdf": "zip_unsafe",
                     "bomb.zip": "zip_unsafe"}
    assert (tmp_path / "out" / "batch" / "2026" / "notice.pdf").exists()
    assert not (tmp_path / "escape.pdf").exists()


def test_bulk_profiles_check(softhsm_state):
    completed = _bulk(softhsm_state, "profiles", "--json")

    assert completed.returncode == 0, completed.stderr
    profiles = {entry["profile"]: entry for entry in json.loads(completed.stdout)["profiles"]}
    assert profiles["seal"]["ok"] and profiles["seal"]["key_type"] == "rsa"
    assert profiles["seal_ec"]["ok"] and profiles["seal_ec"]["key_type"] == "ec"
