"""Content-addressed files: each document is stored once, under the SHA-256 of its plaintext.

A file lives at ``<root>/<sha[0:2]>/<sha[2:4]>/<sha>``. Writes are atomic and durable. The content
goes to a temporary file in ``<root>/.tmp`` (same file system) and is fsynced. The file is then
hard-linked to its final name, which fails when the name exists, so two writers never replace each
other's file. Last, the directory is fsynced. The caller records the file in the database only after ``write`` returns.
A crash before that record leaves a file without a record (an orphan) or a temporary file, and
``qsign archive verify`` reports both. It never leaves a record without its file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from archive.crypto import CHUNK_BYTES, EnvelopeReader, EnvelopeWriter, KeyEncryptionKey, is_envelope
from archive.errors import DocumentCorrupt, DocumentNotFound, Reason
from qsign.i18n import N_

__all__ = ["DocumentStore", "StoredFile", "fsync_directory", "TEMP_DIR_NAME", "is_sha256"]

_logger = logging.getLogger(__name__)

TEMP_DIR_NAME = ".tmp"
_HEX = set("0123456789abcdef")


def is_sha256(value: str) -> bool:
    """Return whether ``value`` is 64 lowercase hexadecimal digits."""
    return len(value) == 64 and set(value) <= _HEX


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (new, renamed or removed names) to disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_directories(path: Path) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent that gained an entry."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_directory(directory.parent)


@dataclass(frozen=True)
class StoredFile:
    """A durable file in the store."""

    sha256: str
    #: Plaintext size in bytes.
    size: int
    #: SHA-256 of the bytes on disk (equal to ``sha256`` when not encrypted).
    stored_sha256: str
    encrypted: bool
    kek_id: str | None
    path: Path
    #: False when the same content was already in the store and this write added nothing.
    created: bool


class _HashingWriter:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.handle.write(data)


def _source_chunks(source: bytes | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start:start + CHUNK_BYTES])
        return
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            yield from iter(lambda: handle.read(CHUNK_BYTES), b"")
        return
    yield from iter(lambda: source.read(CHUNK_BYTES), b"")


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DocumentStore:
    """The files under ``root``, encrypted with ``kek`` when one is given."""

    def __init__(self, root: Path, kek: KeyEncryptionKey | None = None) -> None:
        self.root = root
        self.kek = kek
        self.temp_dir = root / TEMP_DIR_NAME

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[0:2] / sha256[2:4] / sha256

    def write(self, source: bytes | os.PathLike[str] | BinaryIO) -> StoredFile:
        """Store ``source`` (bytes, a path, or a binary file read to its end) durably, streaming it.

        Returns the stored file; when the content was stored before, the existing file is kept and
        the new copy discarded.
        """
        _make_directories(self.temp_dir)
        temporary = self.temp_dir / f"{uuid.uuid4().hex}.part"
        plain_digest = hashlib.sha256()
        size = 0

        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                stored = _HashingWriter(handle)
                envelope = EnvelopeWriter(stored, self.kek) if self.kek else None
                for chunk in _source_chunks(source):
                    plain_digest.update(chunk)
                    size += len(chunk)
                    if envelope:
                        envelope.write(chunk)
                    else:
                        stored.write(chunk)
                if envelope:
                    envelope.finish()
                handle.flush()
                os.fsync(handle.fileno())

            sha256 = plain_digest.hexdigest()
            final = self.path_for(sha256)
            _make_directories(final.parent)
            created = self._link_new(temporary, final, sha256)
            fsync_directory(final.parent)
            stored_sha256 = stored.digest.hexdigest() if created else _hash_file(final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

        if created:
            _logger.info("stored document %s (%d bytes, encrypted=%s)", sha256, size, bool(self.kek))
        encrypted = is_envelope(final)
        return StoredFile(sha256=sha256, size=size, stored_sha256=stored_sha256, encrypted=encrypted,
                          kek_id=self.kek.key_id if encrypted and self.kek else None,
                          path=final, created=created)

    def _link_new(self, temporary: Path, final: Path, sha256: str) -> bool:
        """Give ``temporary`` its final name; return False when a good copy was already there."""
        try:
            os.link(temporary, final)
            return True
        except FileExistsError:
            pass

        try:
            self.check(sha256)
            return False
        except DocumentCorrupt as error:
            # A corrupt leftover (for instance from a disk error) must not shadow the good copy.
            _logger.warning("replacing corrupt stored file %s: %s", sha256, error.params.get("reason"))
            os.replace(temporary, final)
            return True

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def stored_digest(self, sha256: str) -> str:
        """Return the SHA-256 of the file as stored; raise ``DocumentNotFound`` when absent."""
        path = self.path_for(sha256)
        try:
            return _hash_file(path)
        except FileNotFoundError:
            raise DocumentNotFound(sha256=sha256, ids={"sha256": sha256}) from None

    def plaintext_chunks(self, sha256: str) -> Iterator[bytes]:
        """Yield the plaintext; the last step checks the tag and the SHA-256.

        Raises ``DocumentCorrupt`` after the last chunk if either check fails, so a caller must
        discard what it received unless the iteration ends normally.
        """
        path = self.path_for(sha256)
        if not path.exists():
            raise DocumentNotFound(sha256=sha256, ids={"sha256": sha256})

        digest = hashlib.sha256()
        if is_envelope(path):
            if self.kek is None:
                raise DocumentCorrupt(sha256=sha256, reason=Reason(N_("the file is encrypted and no "
                                                                      "key-encryption key is configured")),
                                      ids={"sha256": sha256})
            reader = EnvelopeReader(path, self.kek, sha256)
            try:
                for chunk in reader.chunks():
                    digest.update(chunk)
                    yield chunk
                reader.finish()
            finally:
                reader.close()
        else:
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
                    yield chunk

        if digest.hexdigest() != sha256:
            raise DocumentCorrupt(sha256=sha256, reason=Reason(N_("content does not match its SHA-256")),
                                  ids={"sha256": sha256})

    def check(self, sha256: str) -> None:
        """Read the file through; raise ``DocumentCorrupt`` or ``DocumentNotFound`` on a problem."""
        for _chunk in self.plaintext_chunks(sha256):
            pass

    def read_bytes(self, sha256: str) -> bytes:
        """Return the whole plaintext, checked; meant for documents that fit in memory."""
        buffer = io.BytesIO()
        for chunk in self.plaintext_chunks(sha256):
            buffer.write(chunk)
        return buffer.getvalue()

    def export(self, sha256: str, destination: Path) -> None:
        """Write the checked plaintext to ``destination`` atomically; nothing appears there on error."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.part")
        try:
            with temporary.open("wb") as handle:
                for chunk in self.plaintext_chunks(sha256):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, destination)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def remove(self, sha256: str) -> bool:
        """Delete the file durably; return False when it was already gone."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_directory(path.parent)
        return True

    def iter_files(self) -> Iterator[Path]:
        """Yield every regular file under the root, temporary files included."""
        if not self.root.exists():
            return
        for directory, _subdirectories, names in os.walk(self.root):
            for name in names:
                yield Path(directory) / name
