"""The archive as the agent, bulk sealing and the verification service use it.

    archive = Archive.open(state_dir, config)
    record = archive.store_document(path_or_bytes, DocumentKind.ORIGINAL, template_id="notice",
                                    actor="officer:li", object_ids={"request_id": "r1"})
    with archive.transaction() as tx:              # one database transaction
        tx.create_request("r1", state="uploaded", original_sha256=record.sha256)
        tx.audit("officer:li", "request.created", object_ids={"request_id": "r1"})
    archive.close()

A document is written to the store (durably) before its database record; see ``archive.store``.
Audit entries are appended in the same transaction as the records they describe. Every
``checkpoint_every`` entries, and at the first append after ``checkpoint_interval_seconds`` since
the last checkpoint, a checkpoint is signed after the commit. When the signer cannot be
opened (token absent), the entry is still recorded and the failure is logged, so the next
checkpoint covers the entry.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, func, insert, or_, select, update

from archive import audit as audit_module
from archive import records
from archive.audit import AuditEntry, AuditOutcome, parse_utc
from archive.checkpoint import open_signer, write_checkpoint
from archive.crypto import KeyEncryptionKey, KeyFileKek, Pkcs11Kek
from archive.db import create_archive_engine, read_transaction, write_transaction
from archive.errors import DocumentNotFound, InvalidDigest, SignerUnavailable
from archive.migrate import upgrade
from archive.schema import audit_log, checkpoints, documents, job_items, requests
from archive.settings import ArchiveSettings, load_settings
from archive.store import DocumentStore, StoredFile, is_sha256
from archive.verify import VerifyReport, verify_archive
from qsign.config import Config, apply_environment, load_config

__all__ = ["Archive", "ArchiveTransaction", "DocumentKind", "DocumentRecord", "AuditOutcome", "AuditEntry"]

_logger = logging.getLogger(__name__)


class DocumentKind(str, enum.Enum):
    ORIGINAL = "original"
    SIGNED = "signed"
    OTHER = "other"


@dataclass(frozen=True)
class DocumentRecord:
    """A document the archive stores (or stored, when ``pruned_at`` is set)."""

    sha256: str
    size: int
    stored_sha256: str
    encrypted: bool
    kek_id: str | None
    kind: str
    media_type: str | None
    template_id: str | None
    stored_at: str
    legal_hold: bool
    pruned_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _document_record(row: Mapping[str, Any] | None) -> DocumentRecord | None:
    return DocumentRecord(**dict(row)) if row is not None else None


def normalize_sha256(value: str) -> str:
    """Return ``value`` in lowercase; raise ``InvalidDigest`` unless it is a SHA-256 hex value."""
    lowered = value.strip().lower()
    if not is_sha256(lowered):
        raise InvalidDigest(value=value[:80])
    return lowered


def open_kek(settings: ArchiveSettings, config: Config) -> KeyEncryptionKey | None:
    """Open the configured key-encryption key, or return None when encryption is off."""
    if settings.encryption == "off":
        return None
    if settings.encryption == "keyfile":
        return KeyFileKek(settings.kek_file, create=settings.kek_create)

    from token_drivers.pin import read_pin

    profile = config.tokens[settings.kek_profile]
    apply_environment(config)
    pin = read_pin(profile.pin_file, pin_env=profile.pin_env or "QSIGN_PIN", interactive=False)
    return Pkcs11Kek(profile.module, profile.token_label, profile.key_label, pin, create=settings.kek_create)


class ArchiveTransaction:
    """Records and audit entries written in one database transaction; get one from ``Archive.transaction``."""

    def __init__(self, archive: Archive, connection: Connection) -> None:
        self.archive = archive
        self.connection = connection
        #: Sequence numbers appended in this transaction.
        self.appended: list[int] = []

    def audit(self, actor: str, action: str, outcome: AuditOutcome | str = AuditOutcome.SUCCESS, *,
              device: str | None = None, object_ids: Mapping[str, Any] | None = None,
              reason: str | None = None, document_hashes: Sequence[str] = ()) -> AuditEntry:
        """Append an audit entry; see ``archive.audit.append_entry`` for what is rejected."""
        entry = audit_module.append_entry(self.connection, actor=actor, action=action, outcome=outcome,
                                          device=device, object_ids=object_ids, reason=reason,
                                          document_hashes=document_hashes)
        self.appended.append(entry.seq)
        return entry

    def record_document(self, stored: StoredFile, kind: DocumentKind | str, *, media_type: str | None = None,
                        template_id: str | None = None, legal_hold: bool = False) -> DocumentRecord:
        """Record a durable stored file; an existing record is kept (and un-pruned)."""
        existing = self.get_document(stored.sha256)
        if existing is None:
            self.connection.execute(insert(documents).values(
                sha256=stored.sha256, size=stored.size, stored_sha256=stored.stored_sha256,
                encrypted=stored.encrypted, kek_id=stored.kek_id, kind=DocumentKind(kind).value,
                media_type=media_type, template_id=template_id, stored_at=audit_module.utc_now(),
                legal_hold=legal_hold, pruned_at=None))
        else:
            values: dict[str, Any] = {}
            if existing.pruned_at or existing.stored_sha256 != stored.stored_sha256:
                values.update(pruned_at=None, stored_sha256=stored.stored_sha256, encrypted=stored.encrypted,
                              kek_id=stored.kek_id)
            if legal_hold and not existing.legal_hold:
                values["legal_hold"] = True
            if values:
                self.connection.execute(update(documents).where(documents.c.sha256 == stored.sha256)
                                        .values(**values))
        return self.get_document(stored.sha256)

    def get_document(self, sha256: str) -> DocumentRecord | None:
        row = self.connection.execute(select(documents).where(documents.c.sha256 == sha256)).mappings().first()
        return _document_record(row)

    def set_legal_hold(self, sha256: str, hold: bool) -> DocumentRecord:
        if self.get_document(sha256) is None:
            raise DocumentNotFound(sha256=sha256, ids={"sha256": sha256})
        self.connection.execute(update(documents).where(documents.c.sha256 == sha256).values(legal_hold=hold))
        return self.get_document(sha256)

    def create_request(self, request_id: str, **fields: Any) -> records.RequestRecord:
        return records.create_request(self.connection, request_id, **fields)

    def update_request(self, request_id: str, **fields: Any) -> records.RequestRecord:
        return records.update_request(self.connection, request_id, **fields)

    def get_request(self, request_id: str) -> records.RequestRecord:
        return records.get_request(self.connection, request_id)

    def list_requests(self, state: str | None = None, requester: str | None = None,
                      limit: int = 1000) -> list[records.RequestRecord]:
        return records.list_requests(self.connection, state=state, requester=requester, limit=limit)

    def create_job(self, job_id: str, **fields: Any) -> records.JobRecord:
        return records.create_job(self.connection, job_id, **fields)

    def update_job(self, job_id: str, **fields: Any) -> records.JobRecord:
        return records.update_job(self.connection, job_id, **fields)

    def get_job(self, job_id: str) -> records.JobRecord:
        return records.get_job(self.connection, job_id)

    def set_job_item(self, job_id: str, item_key: str, **fields: Any) -> records.JobItemRecord:
        return records.set_job_item(self.connection, job_id, item_key, **fields)

    def get_job_items(self, job_id: str, state: str | None = None) -> list[records.JobItemRecord]:
        return records.get_job_items(self.connection, job_id, state)

    def register_device(self, device_id: str, **fields: Any) -> records.DeviceRecord:
        return records.register_device(self.connection, device_id, **fields)

    def update_device(self, device_id: str, **fields: Any) -> records.DeviceRecord:
        return records.update_device(self.connection, device_id, **fields)

    def get_device(self, device_id: str) -> records.DeviceRecord:
        return records.get_device(self.connection, device_id)

    def list_devices(self, include_revoked: bool = False) -> list[records.DeviceRecord]:
        return records.list_devices(self.connection, include_revoked)


class Archive:
    """An open archive: database, document store, key-encryption key and checkpoint signer.

    Safe to use from several threads and processes at once; PKCS#11 calls hold the module lock.
    """

    def __init__(self, config: Config, settings: ArchiveSettings, kek: KeyEncryptionKey | None) -> None:
        self.config = config
        self.settings = settings
        self.engine = create_archive_engine(settings.database_url, settings.sqlite_synchronous)
        self.store = DocumentStore(settings.documents_dir, kek)
        self._signer: Any = None
        self._signer_failed = False
        #: Unix time of the newest checkpoint, read from the database when first needed.
        self._last_checkpoint_at: float | None = None

    @classmethod
    def open(cls, state_dir: Path | str, config: Config | None = None, *, with_key: bool = True) -> Archive:
        """Open (and create or migrate) the archive of ``state_dir``.

        ``with_key=False`` skips opening the key-encryption key: encrypted documents can then be
        checked as stored but not read. Raises ``ConfigError`` for a bad ``[archive]`` section and
        ``KeyEncryptionKeyUnavailable`` when the configured key cannot be opened.
        """
        state_dir = Path(state_dir)
        config = config or load_config(state_dir)
        settings = load_settings(config)
        kek = open_kek(settings, config) if with_key else None
        archive = cls(config, settings, kek)
        try:
            upgrade(archive.engine)
        except BaseException:
            archive.close()
            raise
        return archive

    def close(self) -> None:
        """Release the signer, the key-encryption key's session and the database connections."""
        if self._signer is not None:
            with contextlib.suppress(Exception):
                self._signer.close()
            self._signer = None
        if self.store.kek is not None:
            self.store.kek.close()
            self.store.kek = None
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ArchiveTransaction]:
        """Yield an ``ArchiveTransaction`` that commits when the block ends and rolls back on error."""
        with write_transaction(self.engine) as connection:
            transaction = ArchiveTransaction(self, connection)
            yield transaction
        self._checkpoint_if_due(transaction.appended)

    # Documents

    def store_document(self, source: bytes | os.PathLike[str] | BinaryIO,
                       kind: DocumentKind | str = DocumentKind.ORIGINAL, *, media_type: str | None = None,
                       template_id: str | None = None, legal_hold: bool = False, actor: str | None = None,
                       device: str | None = None, object_ids: Mapping[str, Any] | None = None) -> DocumentRecord:
        """Store a document durably, then record it; with ``actor``, audit ``document.stored`` too."""
        stored = self.store.write(source)
        with self.transaction() as tx:
            record = tx.record_document(stored, kind, media_type=media_type, template_id=template_id,
                                        legal_hold=legal_hold)
            if actor:
                tx.audit(actor, "document.stored", device=device,
                         object_ids={"kind": DocumentKind(kind).value, **(object_ids or {})},
                         document_hashes=[stored.sha256])
        return record

    def get_document(self, sha256: str) -> DocumentRecord | None:
        sha256 = normalize_sha256(sha256)
        with read_transaction(self.engine) as connection:
            row = connection.execute(select(documents).where(documents.c.sha256 == sha256)).mappings().first()
        return _document_record(row)

    def _require_held(self, sha256: str) -> str:
        sha256 = normalize_sha256(sha256)
        record = self.get_document(sha256)
        if record is None or record.pruned_at:
            raise DocumentNotFound(sha256=sha256, ids={"sha256": sha256})
        return sha256

    def read_document(self, sha256: str) -> bytes:
        """Return a document's checked plaintext; raise ``DocumentCorrupt`` or ``DocumentNotFound``."""
        return self.store.read_bytes(self._require_held(sha256))

    def export_document(self, sha256: str, destination: Path) -> None:
        """Write a document's checked plaintext to ``destination`` atomically, streaming it."""
        self.store.export(self._require_held(sha256), destination)

    def set_legal_hold(self, sha256: str, hold: bool, *, actor: str, reason: str | None = None) -> DocumentRecord:
        """Put a document under legal hold (never pruned) or release it, and audit the change."""
        sha256 = normalize_sha256(sha256)
        with self.transaction() as tx:
            record = tx.set_legal_hold(sha256, hold)
            tx.audit(actor, "document.legal_hold_set" if hold else "document.legal_hold_released",
                     reason=reason, document_hashes=[sha256])
        return record

    # Audit log and checkpoints

    def audit(self, actor: str, action: str, outcome: AuditOutcome | str = AuditOutcome.SUCCESS, *,
              device: str | None = None, object_ids: Mapping[str, Any] | None = None,
              reason: str | None = None, document_hashes: Sequence[str] = ()) -> AuditEntry:
        """Append one audit entry in its own transaction and return it."""
        with self.transaction() as tx:
            return tx.audit(actor, action, outcome, device=device, object_ids=object_ids, reason=reason,
                            document_hashes=document_hashes)

    @contextlib.contextmanager
    def reading(self) -> Iterator[ArchiveTransaction]:
        """Yield an ``ArchiveTransaction`` over a read-only snapshot; its write methods must not be called."""
        with read_transaction(self.engine) as connection:
            yield ArchiveTransaction(self, connection)

    def audit_entries(self, after_seq: int = 0, limit: int | None = None, **filters: Any) -> list[AuditEntry]:
        with read_transaction(self.engine) as connection:
            return list(audit_module.iter_entries(connection, after_seq, limit, **filters))

    def _open_signer(self) -> Any:
        if self._signer is None:
            self._signer = open_signer(self.settings, self.config)
        return self._signer

    def checkpoint(self) -> tuple[int, str] | None:
        """Sign a checkpoint of the current head now; raise ``SignerUnavailable`` if no key is configured.

        Returns ``(seq, head_hash)``, or None when the log is empty or its head is already signed.
        """
        signer = self._open_signer()
        if signer is None:
            raise SignerUnavailable()
        with write_transaction(self.engine) as connection:
            return write_checkpoint(connection, signer)

    def _checkpoint_due(self, appended: list[int]) -> bool:
        every = self.settings.checkpoint_every
        if every and any(seq % every == 0 for seq in appended):
            return True

        interval = self.settings.checkpoint_interval_seconds
        if not interval or not appended:
            return False
        if self._last_checkpoint_at is None:
            with read_transaction(self.engine) as connection:
                last = connection.execute(select(func.max(checkpoints.c.signed_at))).scalar()
            self._last_checkpoint_at = parse_utc(last) if last else 0.0
        return time.time() - self._last_checkpoint_at >= interval

    def _checkpoint_if_due(self, appended: list[int]) -> None:
        if not (self.settings.checkpoint_profile or self.settings.checkpoint_key_file) or self._signer_failed:
            return
        if not self._checkpoint_due(appended):
            return
        try:
            self.checkpoint()
            self._last_checkpoint_at = time.time()
        except Exception:
            # The entries are committed; the next due checkpoint covers them.
            self._signer_failed = True
            _logger.warning("periodic audit checkpoint failed after entry %d; continuing without signing "
                            "until the archive is reopened", max(appended), exc_info=True)

    # Lookup and verification

    def find(self, *, sha256: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """Return the records, requests, job items and audit entries about a document or a request."""
        with read_transaction(self.engine) as connection:
            if sha256 is not None:
                return self._find_document(connection, normalize_sha256(sha256))
            return self._find_request(connection, request_id or "")

    def _find_document(self, connection: Connection, sha256: str) -> dict[str, Any]:
        row = connection.execute(select(documents).where(documents.c.sha256 == sha256)).mappings().first()
        request_rows = connection.execute(
            select(requests).where(or_(requests.c.original_sha256 == sha256, requests.c.signed_sha256 == sha256))
        ).mappings()
        item_rows = connection.execute(
            select(job_items).where(or_(job_items.c.input_sha256 == sha256, job_items.c.output_sha256 == sha256))
        ).mappings()
        entries = connection.execute(
            select(audit_log).where(audit_log.c.document_hashes.contains(f'"{sha256}"')).order_by(audit_log.c.seq)
        ).mappings()
        return {
            "sha256": sha256,
            "document": dict(row) if row else None,
            "file_present": self.store.exists(sha256),
            "requests": [dict(r) for r in request_rows],
            "job_items": [dict(r) for r in item_rows],
            "audit": [audit_module.entry_from_row(e).to_dict() for e in entries],
        }

    def _find_request(self, connection: Connection, request_id: str) -> dict[str, Any]:
        request = connection.execute(select(requests).where(requests.c.id == request_id)).mappings().first()
        needle = json.dumps(request_id, ensure_ascii=False)
        entries = connection.execute(
            select(audit_log).where(audit_log.c.object_ids.contains(f'"request_id":{needle}'))
            .order_by(audit_log.c.seq)).mappings()
        documents_found = []
        if request is not None:
            for sha256 in (request["original_sha256"], request["signed_sha256"]):
                if sha256:
                    query = select(documents).where(documents.c.sha256 == sha256)
                    document = connection.execute(query).mappings().first()
                    documents_found.append({**dict(document), "file_present": self.store.exists(sha256)})
        return {
            "request_id": request_id,
            "request": dict(request) if request else None,
            "documents": documents_found,
            "audit": [audit_module.entry_from_row(e).to_dict() for e in entries],
        }

    def verify(self) -> VerifyReport:
        """Check the whole archive (see ``archive.verify``) and return the findings as a report."""
        with read_transaction(self.engine) as connection:
            return verify_archive(connection, self.store, self.config.trust_anchors, self.config.intermediates)

