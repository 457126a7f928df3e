"""Backups: one tar file with a consistent database snapshot, the stored files and a signed manifest.

Layout of the tar (ustar format, so every member has one 512-byte header and no extension headers)::

    archive.db                     SQLite online-backup snapshot
    documents/ab/cd/<sha256>       every file the snapshot records and has not pruned, as stored
    manifest.json                  {"format", "version", "created_at", "audit_head", "files": [...]}
    manifest.sig                   signature of manifest.json by the checkpoint key, with its certificate

The snapshot is taken first. Stored files never change once written, so copying the files that the
snapshot records gives a consistent backup while the archive stays in use. ``restore_backup``
checks the signature, every header checksum, every file's SHA-256 and size, and that padding and the
end of the tar are zero bytes, so any single changed byte of the file makes it reject the backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import make_url

from archive.audit import canonical_json, utc_now
from archive.checkpoint import SignedPayload, certificate_trust_problem, sign_payload, signer_name, verify_payload
from archive.errors import ArchiveError, BackupInvalid, Reason, RestoreTargetNotEmpty, SignerUnavailable
from archive.store import fsync_directory
from qsign.i18n import N_

__all__ = ["BackupSummary", "create_backup", "restore_backup", "BACKUP_FORMAT"]

_logger = logging.getLogger(__name__)

BACKUP_FORMAT = "qsign-archive-backup"
_VERSION = 1
_DATABASE_NAME = "archive.db"
_MANIFEST = "manifest.json"
_SIGNATURE = "manifest.sig"
_DOCUMENT_PATH = re.compile(r"^documents/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_BLOCK = 512
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupSummary:
    """Summary of a written backup."""

    path: Path
    documents: int
    audit_seq: int
    audit_head: str
    signer: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "documents": self.documents, "audit_seq": self.audit_seq,
                "audit_head": self.audit_head, "signer": self.signer}


class _HashingReader(io.RawIOBase):
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _sqlite_path(database_url: str) -> Path:
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        # NOTE: PostgreSQL archives need pg_dump; this module snapshots SQLite files only.
        raise ArchiveError(N_("Backups support SQLite archive databases only."))
    return Path(url.database)


def _snapshot_database(source: Path, destination: Path) -> tuple[list[str], int, str]:
    """Copy the database with SQLite's online backup API; return (unpruned documents, head seq, head hash)."""
    source_connection = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    target_connection = sqlite3.connect(destination)
    try:
        source_connection.backup(target_connection)
    finally:
        source_connection.close()
    try:
        # A self-contained file: no -wal or -shm beside it in the backup.
        target_connection.execute("PRAGMA journal_mode = DELETE")
        recorded_documents = [row[0] for row in target_connection.execute(
            "SELECT sha256 FROM documents WHERE pruned_at IS NULL ORDER BY sha256")]
        last = target_connection.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        target_connection.close()
    return recorded_documents, (last[0] if last else 0), (last[1] if last else "0" * 64)


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o600
    with path.open("rb") as handle:
        reader = _HashingReader(handle)
        tar.addfile(info, reader)
    return {"path": name, "sha256": reader.digest.hexdigest(), "size": info.size}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def create_backup(archive: Any, destination: Path) -> BackupSummary:
    """Write a signed backup of ``archive`` (an ``archive.api.Archive``) to ``destination`` atomically.

    Raises ``SignerUnavailable`` when no checkpoint key is configured, because an unsigned backup
    cannot be distinguished from a forged one.
    """
    signer = archive._open_signer()
    if signer is None:
        raise SignerUnavailable()
    database = _sqlite_path(archive.settings.database_url)
    destination = destination.resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.part")

    with tempfile.TemporaryDirectory(prefix="qsign-backup-") as work:
        snapshot = Path(work) / _DATABASE_NAME
        recorded_documents, head_seq, head_hash = _snapshot_database(database, snapshot)
        try:
            with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar:
                files = [_add_file(tar, _DATABASE_NAME, snapshot)]
                for sha256 in recorded_documents:
                    path = archive.store.path_for(sha256)
                    if not path.exists():
                        raise ArchiveError(N_("Document {sha256} is recorded but its file is missing; run "
                                              "\"qsign archive verify\" before the backup."), sha256=sha256)
                    files.append(_add_file(tar, f"documents/{sha256[0:2]}/{sha256[2:4]}/{sha256}", path))

                # The manifest names its signer, so a changed certificate in manifest.sig is detected
                # even where no trust anchors are configured.
                manifest = canonical_json({
                    "format": BACKUP_FORMAT, "version": _VERSION, "created_at": utc_now(),
                    "audit_head": {"seq": head_seq, "hash": head_hash},
                    "encryption": archive.settings.encryption, "files": files,
                    "signer": {"name": signer_name(signer),
                               "certificate_sha256": hashlib.sha256(signer.certificate.dump()).hexdigest()},
                }).encode("utf-8")
                signed = sign_payload(signer, manifest)
                _add_bytes(tar, _MANIFEST, manifest)
                _add_bytes(tar, _SIGNATURE, canonical_json(signed.to_json()).encode("utf-8"))
            with temporary.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, destination)
            fsync_directory(destination.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    _logger.info("wrote archive backup %s: %d documents, audit entry %d", destination, len(recorded_documents),
                 head_seq)
    return BackupSummary(path=destination, documents=len(recorded_documents), audit_seq=head_seq, audit_head=head_hash,
                         signer=signed.signer)


def _reject(path: Path, reason: str, **args: Any) -> BackupInvalid:
    arguments = {name: value if isinstance(value, Reason) else str(value) for name, value in args.items()}
    return BackupInvalid(path=str(path), reason=Reason(reason, arguments),
                         ids={"path": str(path)})


def _check_zero(handle: BinaryIO, start: int, end: int) -> bool:
    handle.seek(start)
    remaining = end - start
    while remaining > 0:
        data = handle.read(min(_CHUNK, remaining))
        if not data or data.count(0) != len(data):
            return False
        remaining -= len(data)
    return True


def _check_layout(source: Path, members: list[tarfile.TarInfo]) -> Reason | None:
    """Return why the tar has bytes outside headers and data that are not zero, or None."""
    position = 0
    with source.open("rb") as handle:
        for member in members:
            if member.offset != position or member.offset_data != member.offset + _BLOCK:
                return Reason(N_("unexpected header layout before {name}"), {"name": member.name})
            data_end = member.offset_data + member.size
            padded_end = -(-data_end // _BLOCK) * _BLOCK
            if not _check_zero(handle, data_end, padded_end):
                return Reason(N_("non-zero padding after {name}"), {"name": member.name})
            position = padded_end
        total = os.fstat(handle.fileno()).st_size
        if not _check_zero(handle, position, total):
            return Reason(N_("non-zero bytes after the last member"))
    return None


def _read_members(source: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(source, "r:")
    except (tarfile.TarError, OSError) as error:
        raise _reject(source, N_("not a readable tar file ({error})"), error=error) from None
    try:
        members_list = tar.getmembers()
    except tarfile.TarError as error:
        tar.close()
        raise _reject(source, N_("damaged tar file ({error})"), error=error) from None

    members: dict[str, tarfile.TarInfo] = {}
    for member in members_list:
        if not member.isreg() or member.name in members:
            tar.close()
            raise _reject(source, N_("unexpected member {name}"), name=member.name)
        members[member.name] = member
    problem = _check_layout(source, members_list)
    if problem:
        tar.close()
        raise _reject(source, problem.template, **problem.args)
    return tar, members


def _read_signed_manifest(source: Path, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                          anchors: list[Path], intermediates: list[Path]) -> dict[str, Any]:
    if _MANIFEST not in members or _SIGNATURE not in members:
        raise _reject(source, N_("the manifest or its signature is missing"))
    manifest_bytes = tar.extractfile(members[_MANIFEST]).read()
    signature_bytes = tar.extractfile(members[_SIGNATURE]).read()
    try:
        signed = SignedPayload.from_json(manifest_bytes, json.loads(signature_bytes))
        if canonical_json(signed.to_json()).encode("utf-8") != signature_bytes:
            raise ValueError("not canonical JSON")
    except (ValueError, KeyError, TypeError):
        raise _reject(source, N_("the manifest signature is malformed")) from None
    if not verify_payload(signed):
        raise _reject(source, N_("the manifest signature does not verify"))
    if anchors:
        problem = certificate_trust_problem(signed.certificate, anchors, intermediates)
        if problem:
            raise _reject(source, N_("the manifest was signed by an untrusted certificate: {problem}"),
                          problem=problem)

    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != BACKUP_FORMAT or manifest.get("version") != _VERSION:
        raise _reject(source, N_("unknown backup format"))
    if manifest.get("signer") != {"name": signed.signer,
                                  "certificate_sha256": hashlib.sha256(signed.certificate).hexdigest()}:
        raise _reject(source, N_("the signer certificate differs from the one the manifest names"))
    listed = {entry["path"] for entry in manifest["files"]}
    for name in listed:
        if name != _DATABASE_NAME and not _DOCUMENT_PATH.match(name):
            raise _reject(source, N_("the manifest lists an unexpected path {name}"), name=name)
    unexpected = set(members) - listed - {_MANIFEST, _SIGNATURE}
    if unexpected:
        raise _reject(source, N_("member {name} is not in the manifest"), name=sorted(unexpected)[0])
    if _DATABASE_NAME not in listed:
        raise _reject(source, N_("the manifest lists no database"))
    return manifest


def _extract_checked(source: Path, tar: tarfile.TarFile, member: tarfile.TarInfo | None, entry: dict[str, Any],
                     target: Path) -> None:
    if member is None:
        raise _reject(source, N_("{name} is listed in the manifest but missing"), name=entry["path"])
    if member.size != entry["size"]:
        raise _reject(source, N_("{name} has the wrong size"), name=entry["path"])
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tar.extractfile(member) as reader, target.open("wb") as writer:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    if digest.hexdigest() != entry["sha256"]:
        raise _reject(source, N_("{name} does not match its SHA-256 in the manifest"), name=entry["path"])


def restore_backup(source: Path, state_dir: Path, anchors: list[Path],
                   intermediates: list[Path]) -> dict[str, Any]:
    """Restore a backup into ``state_dir/archive`` after checking it completely.

    Raises ``BackupInvalid`` (and leaves nothing behind) when any check fails, and
    ``RestoreTargetNotEmpty`` when ``state_dir`` already contains an archive. When ``anchors`` is
    empty the signature is checked against the certificate in the backup only.
    """
    final = state_dir / "archive"
    if final.exists() and any(final.iterdir()):
        raise RestoreTargetNotEmpty(path=str(state_dir), ids={"path": str(state_dir)})

    tar, members = _read_members(source)
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = state_dir / f".restore-{uuid.uuid4().hex}"
    try:
        with tar:
            manifest = _read_signed_manifest(source, tar, members, anchors, intermediates)
            for entry in manifest["files"]:
                _extract_checked(source, tar, members.get(entry["path"]), entry, staging / entry["path"])
        if final.exists():
            final.rmdir()
        os.replace(staging, final)
        fsync_directory(state_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _logger.info("restored archive backup %s into %s", source, final)
    return {"path": str(final), "files": len(manifest["files"]), "audit_head": manifest["audit_head"],
            "created_at": manifest["created_at"]}
