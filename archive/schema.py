"""The archive's tables as SQLAlchemy Core metadata.

Times are stored as ISO 8601 UTC text (``2026-01-31T08:00:00.000000Z``) so that they sort, compare
and hash the same on SQLite and PostgreSQL. SHA-256 values are 64 lowercase hex digits. A change here
needs a new Alembic revision in ``archive/migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, ForeignKey, Integer, LargeBinary, MetaData,
                        String, Table, Text)

__all__ = ["metadata", "documents", "devices", "requests", "jobs", "job_items", "audit_log",
           "audit_head", "checkpoints"]

metadata = MetaData()

_SHA = 64
_TIME = 32

#: One row per distinct document content; the file is ``<documents_dir>/<sha[:2]>/<sha[2:4]>/<sha>``.
documents = Table(
    "documents", metadata,
    Column("sha256", String(_SHA), primary_key=True, comment="SHA-256 of the plaintext"),
    Column("size", BigInteger, nullable=False, comment="plaintext size in bytes"),
    Column("stored_sha256", String(_SHA), nullable=False, comment="SHA-256 of the file as stored"),
    Column("encrypted", Boolean, nullable=False, default=False),
    Column("kek_id", String(200), comment="key-encryption key that wraps the data key"),
    Column("kind", String(32), nullable=False, comment="original, signed or other"),
    Column("media_type", String(100)),
    Column("template_id", String(100), comment="template that sets the retention period"),
    Column("stored_at", String(_TIME), nullable=False),
    Column("legal_hold", Boolean, nullable=False, default=False),
    Column("pruned_at", String(_TIME), comment="set when retention removed the file"),
)

devices = Table(
    "devices", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(200)),
    Column("token_hash", String(200), comment="hash of the bearer token; never the token"),
    Column("paired_at", String(_TIME), nullable=False),
    Column("last_seen_at", String(_TIME)),
    Column("revoked_at", String(_TIME)),
    Column("attributes", JSON, nullable=False, default=dict),
)

requests = Table(
    "requests", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", String(_TIME), nullable=False),
    Column("updated_at", String(_TIME), nullable=False),
    Column("state", String(32), nullable=False),
    Column("template_id", String(100)),
    Column("requester", String(200)),
    Column("device_id", String(64), ForeignKey("devices.id")),
    Column("file_name", String(500)),
    Column("original_sha256", String(_SHA), ForeignKey("documents.sha256")),
    Column("signed_sha256", String(_SHA), ForeignKey("documents.sha256")),
    Column("attributes", JSON, nullable=False, default=dict),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", String(_TIME), nullable=False),
    Column("updated_at", String(_TIME), nullable=False),
    Column("state", String(32), nullable=False),
    Column("profile", String(100)),
    Column("total", Integer, nullable=False, default=0),
    Column("attributes", JSON, nullable=False, default=dict),
)

#: Per-document state of a bulk job, keyed by the job and the input's name.
job_items = Table(
    "job_items", metadata,
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("item_key", String(1000), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("input_sha256", String(_SHA), ForeignKey("documents.sha256")),
    Column("output_sha256", String(_SHA), ForeignKey("documents.sha256")),
    Column("error_code", String(100)),
    Column("updated_at", String(_TIME), nullable=False),
)

#: The hash-chained audit log. ``object_ids`` and ``document_hashes`` hold the canonical JSON text that
#: went into ``hash``, so that verification recomputes the hash from the stored text alone.
audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("time", String(_TIME), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("device", String(64)),
    Column("action", String(100), nullable=False),
    Column("object_ids", Text, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("reason", Text),
    Column("document_hashes", Text, nullable=False),
    Column("prev_hash", String(_SHA), nullable=False),
    Column("hash", String(_SHA), nullable=False, unique=True),
)

#: One row (id = 1): the sequence number and hash of the last entry. Writers lock this row, which
#: serialises appends on databases with row locks (PostgreSQL) as BEGIN IMMEDIATE does on SQLite.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(_SHA), nullable=False),
)

#: Signed (seq, head hash) pairs. ``payload`` holds the exact bytes that were signed.
checkpoints = Table(
    "checkpoints", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("head_hash", String(_SHA), nullable=False),
    Column("signed_at", String(_TIME), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("digest_algorithm", String(20), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("certificate", LargeBinary, nullable=False, comment="DER of the signer's certificate"),
    Column("signer", String(200), nullable=False),
)
