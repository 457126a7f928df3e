"""The archive's document store: deduplication, streaming, key-file encryption and crash safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archive.errors import DocumentCorrupt
from archive.migrate import HEAD_REVISION
from helpers.archive_state import database, finding_codes, make_archive_state, open_archive, run_python, verify_json


def test_same_bytes_stored_once(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        first = archive.store_document(b"%PDF-1.7 same", "original")
        second = archive.store_document(b"%PDF-1.7 same", "signed")
        files = [path for path in archive.store.iter_files()]

    assert first.sha256 == second.sha256 == hashlib.sha256(b"%PDF-1.7 same").hexdigest()
    assert len(files) == 1
    assert files[0].name == first.sha256
    with database(state) as connection:
        assert connection.execute("SELECT count(*) FROM documents").fetchone()[0] == 1


def test_database_pragmas_and_migration(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with archive.engine.connect() as connection:
            journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
            busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    with open_archive(state):
        pass  # opening an up-to-date database again must not migrate or fail

    assert journal_mode == "wal"
    assert foreign_keys == 1
    assert busy_timeout >= 1000
    with database(state) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION


def test_head_revision_matches_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from archive.migrate import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_large_file_streamed_and_exported(tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    with source.open("wb") as handle:
        for index in range(12):
            handle.write(bytes([index]) * (1 << 20) + os.urandom(100))
    state = make_archive_state(tmp_path / "state", encryption="keyfile", kek_create=True)

    with open_archive(state) as archive:
        record = archive.store_document(source, "original")
        exported = tmp_path / "out" / "copy.bin"
        archive.export_document(record.sha256, exported)

    assert record.size == source.stat().st_size
    assert record.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert exported.read_bytes() == source.read_bytes()


def test_keyfile_encryption_hides_plaintext(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state", encryption="keyfile", kek_create=True)
    plaintext = "税务通知书 confidential".encode() * 50

    with open_archive(state) as archive:
        record = archive.store_document(plaintext, "original")
        stored = archive.store.path_for(record.sha256).read_bytes()
        read_back = archive.read_document(record.sha256)

    assert record.encrypted
    assert record.sha256 == hashlib.sha256(plaintext).hexdigest()
    assert plaintext[:40] not in stored
    assert read_back == plaintext
    assert (state / "archive" / "kek.key").stat().st_mode & 0o777 == 0o600


def test_keyfile_wrong_key_is_corrupt(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state", encryption="keyfile", kek_create=True)
    with open_archive(state) as archive:
        record = archive.store_document(b"secret document", "original")

    (state / "archive" / "kek.key").write_bytes(os.urandom(32))
    with open_archive(state) as archive, pytest.raises(DocumentCorrupt) as raised:
        archive.read_document(record.sha256)

    assert raised.value.code == "document_corrupt"
    assert "unwrap" in str(raised.value.params["reason"])


@pytest.mark.parametrize("position", ["header", "ciphertext", "tag"])
def test_keyfile_flipped_byte_is_corrupt(tmp_path: Path, position: str) -> None:
    state = make_archive_state(tmp_path / "state", encryption="keyfile", kek_create=True)
    with open_archive(state) as archive:
        record = archive.store_document(b"A" * 5000, "original")
        path = archive.store.path_for(record.sha256)

    data = bytearray(path.read_bytes())
    offset = {"header": 20, "ciphertext": len(data) - 2000, "tag": len(data) - 3}[position]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))

    with open_archive(state) as archive, pytest.raises(DocumentCorrupt):
        archive.read_document(record.sha256)
    code, report = verify_json(state)
    assert code == 1
    assert "document_altered" in finding_codes(report)


def test_altered_plain_file_reported(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        record = archive.store_document(b"original text", "original")
        archive.store.path_for(record.sha256).write_bytes(b"original texT")
        with pytest.raises(DocumentCorrupt):
            archive.read_document(record.sha256)

    code, report = verify_json(state)
    assert code == 1
    altered = [f for f in report["findings"] if f["code"] == "document_altered"]
    assert altered[0]["sha256"] == record.sha256


def test_deleted_file_reported_missing(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        record = archive.store_document(b"will vanish", "original")
        archive.store.path_for(record.sha256).unlink()

    code, report = verify_json(state)
    assert code == 1
    missing = [f for f in report["findings"] if f["code"] == "document_missing"]
    assert [f["sha256"] for f in missing] == [record.sha256]


# The child stores a document and kills itself with SIGKILL at the patched step.
_CRASH_CHILD = """
    import os, signal, sys
    from pathlib import Path
    from archive.api import Archive, ArchiveTransaction
    from archive.store import DocumentStore

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[2] == "before-record":
        ArchiveTransaction.record_document = die
    else:
        DocumentStore._link_new = die
    archive = Archive.open(Path(sys.argv[1]))
    archive.store_document(b"crash test document", "original", actor="officer:test")
    print("not killed")
"""


def test_crash_before_record_leaves_reported_orphan(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state):
        pass
    sha256 = hashlib.sha256(b"crash test document").hexdigest()

    child = run_python(_CRASH_CHILD, str(state), "before-record")

    assert child.returncode == -9, child.stderr
    with database(state) as connection:
        assert connection.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0
    code, report = verify_json(state, in_subprocess=True)
    assert code == 1
    orphans = [f for f in report["findings"] if f["code"] == "document_orphan"]
    assert [f["sha256"] for f in orphans] == [sha256]

    # Storing the same bytes again adopts the durable file and records it.
    with open_archive(state) as archive:
        archive.store_document(b"crash test document", "original")
    code, report = verify_json(state)
    assert code == 0, report
    assert finding_codes(report) == []


def test_crash_before_link_leaves_reported_temp_file(tmp_path: Path) -> None:
    state = make_archive_state(tmp_path / "state")
    with open_archive(state):
        pass

    child = run_python(_CRASH_CHILD, str(state), "before-link")

    assert child.returncode == -9, child.stderr
    with database(state) as connection:
        assert connection.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
    code, report = verify_json(state)
    assert code == 1
    assert finding_codes(report) == ["document_incomplete_write"]


def test_read_unknown_document_not_found(tmp_path: Path) -> None:
    from archive.errors import DocumentNotFound, InvalidDigest

    state = make_archive_state(tmp_path / "state")
    with open_archive(state) as archive:
        with pytest.raises(DocumentNotFound):
            archive.read_document("0" * 64)
        with pytest.raises(InvalidDigest):
            archive.read_document("not-a-digest")
