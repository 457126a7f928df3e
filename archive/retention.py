"""Retention: remove stored files past their retention period, never those under a legal hold.

A document's period is ``archive.template_retention_days[template]`` when its template has one, else
the ``--older-than`` value when given, else ``archive.retention_days``; 0 days means keep forever.
A document is under legal hold when its record has ``legal_hold`` set, or when
``archive.legal_holds`` lists its SHA-256 or ``request:<id>`` of a request that uses it.

Each removal first marks the record pruned and appends a ``document.pruned`` audit entry in one
transaction, and only then deletes the file. A crash in between therefore leaves a leftover file
(deleted by the next prune), never a record of a missing file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update

from archive.audit import utc_now
from archive.schema import documents, requests

__all__ = ["PrunedDocument", "prune"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrunedDocument:
    sha256: str
    template_id: str | None
    stored_at: str
    retention_days: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _held_by_config(archive: Any) -> set[str]:
    holds = archive.settings.legal_holds
    held = {value.lower() for value in holds if not value.startswith("request:")}
    request_ids = [value.split(":", 1)[1] for value in holds if value.startswith("request:")]
    if request_ids:
        with archive.engine.connect() as connection:
            for row in connection.execute(select(requests.c.original_sha256, requests.c.signed_sha256)
                                          .where(requests.c.id.in_(request_ids))):
                held.update(value for value in row if value)
    return held


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def prune(archive: Any, *, older_than_days: int | None = None, actor: str = "system:retention",
          now: datetime | None = None, dry_run: bool = False) -> list[PrunedDocument]:
    """Remove every document past its retention period; return what was (or, dry run, would be) removed."""
    settings = archive.settings
    now = now or datetime.now(timezone.utc)
    held = _held_by_config(archive)

    with archive.engine.connect() as connection:
        candidates = list(connection.execute(
            select(documents.c.sha256, documents.c.template_id, documents.c.stored_at)
            .where(documents.c.pruned_at.is_(None), documents.c.legal_hold.is_(False))
            .order_by(documents.c.stored_at)).mappings())

    due: list[PrunedDocument] = []
    for row in candidates:
        if row["sha256"] in held:
            continue
        days = settings.template_retention_days.get(row["template_id"] or "")
        if days is None:
            days = older_than_days if older_than_days is not None else settings.retention_days
        if days <= 0 or _parse_time(row["stored_at"]) > now - timedelta(days=days):
            continue
        due.append(PrunedDocument(sha256=row["sha256"], template_id=row["template_id"],
                                  stored_at=row["stored_at"], retention_days=days))

    if dry_run:
        return due

    for document in due:
        with archive.transaction() as tx:
            # Checked again inside the write lock: a hold set since the scan wins.
            changed = tx.connection.execute(
                update(documents)
                .where(documents.c.sha256 == document.sha256, documents.c.pruned_at.is_(None),
                       documents.c.legal_hold.is_(False))
                .values(pruned_at=utc_now())).rowcount
            if changed:
                tx.audit(actor, "document.pruned", object_ids={"retention_days": document.retention_days},
                         reason=f"retention period of {document.retention_days} days ended",
                         document_hashes=[document.sha256])
        if changed:
            archive.store.remove(document.sha256)
            _logger.info("pruned document %s (stored %s, retention %d days)", document.sha256,
                         document.stored_at, document.retention_days)

    _remove_leftovers(archive)
    return due


def _remove_leftovers(archive: Any) -> None:
    """Delete files whose records are pruned, left by a prune that stopped before deleting them."""
    # NOTE: storing the same bytes again while this runs can lose: the new file may be deleted after
    # its write but before its record clears pruned_at. verify then reports the document missing.
    with archive.engine.connect() as connection:
        pruned = [row.sha256 for row in connection.execute(
            select(documents.c.sha256).where(documents.c.pruned_at.is_not(None)))]
    for sha256 in pruned:
        if archive.store.remove(sha256):
            _logger.info("removed leftover file of pruned document %s", sha256)
