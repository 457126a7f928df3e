"""Create the archive tables: documents, devices, requests, jobs, job items, audit log, checkpoints.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_SHA = 64
_TIME = 32
_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("sha256", sa.String(_SHA), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("stored_sha256", sa.String(_SHA), nullable=False),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.Column("kek_id", sa.String(200)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("media_type", sa.String(100)),
        sa.Column("template_id", sa.String(100)),
        sa.Column("stored_at", sa.String(_TIME), nullable=False),
        sa.Column("legal_hold", sa.Boolean, nullable=False),
        sa.Column("pruned_at", sa.String(_TIME)),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("token_hash", sa.String(200)),
        sa.Column("paired_at", sa.String(_TIME), nullable=False),
        sa.Column("last_seen_at", sa.String(_TIME)),
        sa.Column("revoked_at", sa.String(_TIME)),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(_TIME), nullable=False),
        sa.Column("updated_at", sa.String(_TIME), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("template_id", sa.String(100)),
        sa.Column("requester", sa.String(200)),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id")),
        sa.Column("file_name", sa.String(500)),
        sa.Column("original_sha256", sa.String(_SHA), sa.ForeignKey("documents.sha256")),
        sa.Column("signed_sha256", sa.String(_SHA), sa.ForeignKey("documents.sha256")),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_index("ix_requests_original_sha256", "requests", ["original_sha256"])
    op.create_index("ix_requests_signed_sha256", "requests", ["signed_sha256"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(_TIME), nullable=False),
        sa.Column("updated_at", sa.String(_TIME), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(100)),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("item_key", sa.String(1000), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("input_sha256", sa.String(_SHA), sa.ForeignKey("documents.sha256")),
        sa.Column("output_sha256", sa.String(_SHA), sa.ForeignKey("documents.sha256")),
        sa.Column("error_code", sa.String(100)),
        sa.Column("updated_at", sa.String(_TIME), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("time", sa.String(_TIME), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("device", sa.String(64)),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("object_ids", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("document_hashes", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(_SHA), nullable=False),
        sa.Column("hash", sa.String(_SHA), nullable=False, unique=True),
    )
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(_SHA), nullable=False),
    )
    # The row exists before the first append, so concurrent first appends lock it instead of racing
    # to insert it.
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.create_table(
        "checkpoints",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(_SHA), nullable=False),
        sa.Column("signed_at", sa.String(_TIME), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("digest_algorithm", sa.String(20), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("certificate", sa.LargeBinary, nullable=False),
        sa.Column("signer", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in ("checkpoints", "audit_head", "audit_log", "job_items", "jobs", "requests", "devices",
                  "documents"):
        op.drop_table(table)
