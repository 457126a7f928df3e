"""The hash-chained audit log: tampering detection, signed checkpoints on SoftHSM2, concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from archive.audit import entry_hash
from helpers.archive_state import database, make_archive_state, open_archive, verify_json
from qsign.errors import InvalidInput

ENTRIES = 35
CHECKPOINT_EVERY = 10


@pytest.fixture
def sealed_state(tmp_path: Path, softhsm_state: Path) -> Path:
    """An archive of 35 entries with checkpoints at 10, 20 and 30 signed by the SoftHSM2 seal key."""
    state = make_archive_state(tmp_path / "state", softhsm_state, checkpoint_profile="seal",
                               checkpoint_every=CHECKPOINT_EVERY, checkpoint_interval_seconds=0)
    with open_archive(state) as archive:
        for number in range(1, ENTRIES + 1):
            archive.audit(f"officer:{number % 3}", "request.signed", object_ids={"request_id": f"r{number}"},
                          document_hashes=[f"{number:064x}"])
    return state


def _hash_of(connection, seq: int) -> str:
    return connection.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]


def _shift(connection, first: int, by: int) -> None:
    # Two steps, because the primary key is checked per row during one UPDATE.
    connection.execute("UPDATE audit_log SET seq = -(seq + ?) WHERE seq >= ?", (by, first))
    connection.execute("UPDATE audit_log SET seq = -seq WHERE seq < 0")


def _rehash(connection, first: int) -> None:
    """Recompute hashes and links from ``first`` on, as an attacker without the signing key can."""
    previous = _hash_of(connection, first - 1)
    rows = connection.execute("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq", (first,)).fetchall()
    for row in rows:
        fields = {key: row[key] for key in row.keys() if key != "hash"}
        fields["prev_hash"] = previous
        new_hash = entry_hash(**fields)
        connection.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?",
                           (previous, new_hash, row["seq"]))
        previous = new_hash
    last = rows[-1]["seq"]
    connection.execute("UPDATE audit_head SET seq = ?, hash = ?", (last, previous))


def edit_entry(connection) -> None:
    connection.execute("UPDATE audit_log SET actor = 'officer:mallory' WHERE seq = 12")


def delete_entry(connection) -> None:
    connection.execute("DELETE FROM audit_log WHERE seq = 12")


def insert_entry(connection) -> None:
    _shift(connection, 12, 1)
    fields = dict(seq=12, time="2026-01-01T00:00:00.000000Z", actor="officer:mallory", device=None,
                  action="request.signed", object_ids='{"request_id":"forged"}', outcome="success",
                  reason=None, document_hashes="[]", prev_hash=_hash_of(connection, 11))
    connection.execute("INSERT INTO audit_log (seq, time, actor, device, action, object_ids, outcome, reason, "
                       "document_hashes, prev_hash, hash) VALUES (:seq, :time, :actor, :device, :action, "
                       ":object_ids, :outcome, :reason, :document_hashes, :prev_hash, :hash)",
                       dict(fields, hash=entry_hash(**fields)))
    connection.execute("UPDATE audit_head SET seq = seq + 1")


def reorder_entries(connection) -> None:
    connection.execute("UPDATE audit_log SET seq = -1 WHERE seq = 12")
    connection.execute("UPDATE audit_log SET seq = 12 WHERE seq = 13")
    connection.execute("UPDATE audit_log SET seq = 13 WHERE seq = -1")


def cut_tail(connection) -> None:
    connection.execute("DELETE FROM audit_log WHERE seq > 25")
    connection.execute("UPDATE audit_head SET seq = 25, hash = ?", (_hash_of(connection, 25),))


def rewrite_chain(connection) -> None:
    edit_entry(connection)
    _rehash(connection, 12)


def forge_checkpoint(connection) -> None:
    connection.execute("UPDATE checkpoints SET payload = replace(payload, '\"seq\":20', '\"seq\":21') "
                       "WHERE seq = 20")


TAMPERING: list[tuple[Callable, str, int]] = [
    (edit_entry, "audit_entry_altered", 12),
    (delete_entry, "audit_entries_missing", 12),
    (insert_entry, "audit_entry_inserted", 12),
    (reorder_entries, "audit_entry_reordered", 12),
    (cut_tail, "audit_truncated", 30),
    (rewrite_chain, "checkpoint_mismatch", 20),
    (forge_checkpoint, "checkpoint_signature_invalid", 20),
]


def test_untouched_log_verifies(sealed_state: Path) -> None:
    code, report = verify_json(sealed_state)

    assert code == 0, report
    assert report["entries_checked"] == ENTRIES
    assert report["checkpoints_checked"] == 3
    assert report["last_checkpoint_seq"] == 30
    assert [f["code"] for f in report["findings"]] == ["audit_entries_unsigned"]


@pytest.mark.parametrize(("tamper", "code", "seq"), TAMPERING, ids=[case[0].__name__ for case in TAMPERING])
def test_tampering_detected_and_named(sealed_state: Path, tamper: Callable, code: str, seq: int) -> None:
    with database(sealed_state) as connection:
        tamper(connection)

    with open_archive(sealed_state) as archive:
        report = archive.verify()

    assert not report.ok
    named = [(f.code, f.seq) for f in report.findings if f.severity == "error"]
    assert (code, seq) in named, named
    assert report.first_broken_entry == min(s for _c, s in named if s is not None)


def test_tampering_reported_by_cli(sealed_state: Path) -> None:
    with database(sealed_state) as connection:
        delete_entry(connection)

    exit_code, report = verify_json(sealed_state, in_subprocess=True)

    assert exit_code == 1
    assert report["first_broken_entry"] == 12
    missing = next(f for f in report["findings"] if f["code"] == "audit_entries_missing")
    assert missing["message"] == "Audit entries 12 to 12 are missing."


def test_reorder_names_both_entries(sealed_state: Path) -> None:
    with database(sealed_state) as connection:
        reorder_entries(connection)

    with open_archive(sealed_state) as archive:
        report = archive.verify()

    reordered = {f.seq for f in report.findings if f.code == "audit_entry_reordered"}
    assert {12, 13} <= reordered


def test_checkpoint_signed_by_hsm_seal_key(sealed_state: Path, softhsm_state: Path) -> None:
    from cryptography import x509

    seal_certificate = x509.load_pem_x509_certificate((softhsm_state / "pki" / "seal-rsa.pem").read_bytes())
    with database(sealed_state) as connection:
        rows = connection.execute("SELECT seq, certificate, signer FROM checkpoints ORDER BY seq").fetchall()

    assert [row["seq"] for row in rows] == [10, 20, 30]
    for row in rows:
        assert x509.load_der_x509_certificate(row["certificate"]) == seal_certificate
        assert row["signer"] == "qsign-hsm/seal-rsa"


def test_untrusted_checkpoint_signer_reported(tmp_path: Path, softhsm_state: Path) -> None:
    key_file, certificate_file = _software_signer_files(tmp_path)
    state = make_archive_state(tmp_path / "state", softhsm_state, checkpoint_key_file=str(key_file),
                               checkpoint_certificate=str(certificate_file), checkpoint_every=2,
                               checkpoint_interval_seconds=0)
    with open_archive(state) as archive:
        archive.audit("officer:li", "request.created")
        archive.audit("officer:li", "request.signed")
        report = archive.verify()

    assert report.checkpoints_checked == 1
    assert [(f.code, f.seq) for f in report.findings if f.severity == "error"] == [
        ("checkpoint_signer_untrusted", 2)]


def _software_signer_files(directory: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-made checkpoint signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    key_file = directory / "signer.key.pem"
    certificate_file = directory / "signer.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, certificate_file


def test_checkpoint_after_interval(tmp_path: Path, softhsm_state: Path) -> None:
    state = make_archive_state(tmp_path / "state", softhsm_state, checkpoint_profile="seal", checkpoint_every=0,
                               checkpoint_interval_seconds=1)
    with open_archive(state) as archive:
        archive.audit("officer:li", "request.created")
        archive.audit("officer:li", "request.reviewed")
        time.sleep(1.1)
        archive.audit("officer:li", "request.signed")
        report = archive.verify()

    # The first entry finds no checkpoint at all, so it is signed at once; the third comes after 1 s.
    assert report.checkpoints_checked == 2
    assert report.last_checkpoint_seq == 3
    assert report.ok


def test_checkpoint_on_demand_from_cli(sealed_state: Path) -> None:
    from conftest import run_qsign

    completed = run_qsign("archive", "checkpoint", "--json", state_dir=sealed_state)

    assert completed.returncode == 0, completed.stderr
    assert '"seq": 35' in completed.stdout
    exit_code, report = verify_json(sealed_state)
    assert exit_code == 0
    assert report["last_checkpoint_seq"] == 35


def test_verify_report_in_chinese(sealed_state: Path) -> None:
    with database(sealed_state) as connection:
        edit_entry(connection)

    _exit_code, report = verify_json(sealed_state, language="zh_CN")

    message = next(f["message"] for f in report["findings"] if f["code"] == "audit_entry_altered")
    assert "审计" in message
    assert "12" in message


@pytest.mark.parametrize("object_ids", [{"pin": "123456"}, {"user_pin": "1"}, {"private_key": "x"},
                                        {"plaintext": "text"}, {"Request": "r1"}, {"request_id": b"bytes"}])
def test_audit_rejects_secret_fields(tmp_path: Path, object_ids: dict) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with pytest.raises(InvalidInput):
            archive.audit("officer:li", "pin.failed", "failure", object_ids=object_ids)
        with pytest.raises(InvalidInput):
            archive.audit("officer:li", "document.stored", document_hashes=["not a hash"])
        assert archive.audit_entries() == []


def test_threads_share_one_archive(tmp_path: Path) -> None:
    import threading

    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        def append(index: int) -> None:
            for number in range(50):
                archive.audit(f"thread:{index}", "test.append", object_ids={"n": number})

        threads = [threading.Thread(target=append, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report = archive.verify()

    assert report.ok
    assert report.entries_checked == 200


_WRITER = """
    import sys
    from pathlib import Path
    from archive.api import Archive

    archive = Archive.open(Path(sys.argv[1]))
    for number in range({count}):
        archive.audit(f"writer:{{sys.argv[2]}}", "test.append", object_ids={{"n": number}})
    archive.close()
"""


def test_concurrent_writers_keep_chain(tmp_path: Path) -> None:
    writers, count = 8, 1000
    state = make_archive_state(tmp_path / "state", checkpoint_every=0, sqlite_synchronous="normal")
    code = textwrap.dedent(_WRITER.format(count=count))

    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-c", code, str(state), str(index)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for index in range(writers)]
    outputs = [process.communicate(timeout=240) for process in processes]
    elapsed = time.monotonic() - started

    for process, (_stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
        assert "locked" not in stderr
    exit_code, report = verify_json(state)
    assert exit_code == 0, report
    assert report["entries_checked"] == writers * count
    with database(state) as connection:
        for index in range(writers):
            numbers = [row[0] for row in connection.execute(
                "SELECT json_extract(object_ids, '$.n') FROM audit_log WHERE actor = ? ORDER BY seq",
                (f"writer:{index}",))]
            assert numbers == list(range(count)), f"writer {index} lost or reordered entries"
    print(f"{writers} writers x {count} entries in {elapsed:.1f} s")
