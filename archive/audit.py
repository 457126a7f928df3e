"""The append-only, hash-chained audit log.

Entry ``n`` stores ``prev_hash`` (the hash of entry ``n - 1``, or 64 zeros for entry 1) and
``hash = SHA-256(canonical JSON of every field but hash)``. The canonical JSON has sorted keys, no
spaces and UTF-8 text, and ``object_ids`` and ``document_hashes`` are stored as that JSON text, so a
verifier recomputes the hash from the row alone. Sequence numbers start at 1 with no gaps.

Appends are serialised by the database. Each runs in a write transaction (``BEGIN IMMEDIATE`` on
SQLite) that reads and updates the single ``audit_head`` row with ``SELECT … FOR UPDATE``. Any
number of processes can therefore append at once, and each entry links to the one before it.

The log must never hold a PIN, a key or document content: ``append_entry`` rejects object id names
that look like secrets, values that are not short strings or numbers, and document hashes that are
not SHA-256 values. Free text goes into ``reason`` only, which the caller must keep free of secrets.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, insert, select, update

from archive.schema import audit_head, audit_log
from archive.store import is_sha256
from qsign.errors import InvalidInput
from qsign.i18n import N_

__all__ = ["AuditEntry", "AuditOutcome", "GENESIS_HASH", "append_entry", "entry_hash", "entry_from_row", "iter_entries",
           "head", "utc_now"]

GENESIS_HASH = "0" * 64
_MAX_REASON = 2000
_MAX_ID_VALUE = 500
#: Words that make an object id name look like a secret, matched against its ``_``-separated parts.
_SECRET_WORDS = {"pin", "puk", "password", "passphrase", "secret", "private", "bearer", "plaintext"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class AuditOutcome(str, enum.Enum):
    """Outcome of the recorded action."""

    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry as stored."""

    seq: int
    time: str
    actor: str
    device: str | None
    action: str
    object_ids: dict[str, Any]
    outcome: str
    reason: str | None
    document_hashes: list[str]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def utc_now() -> str:
    """Return the current time as stored in the archive: ISO 8601 UTC with microseconds."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(value: str) -> float:
    """Return the Unix time of a time as ``utc_now`` writes it."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def canonical_json(value: Any) -> str:
    """Return the one JSON text of ``value`` used for hashing and signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(*, seq: int, time: str, actor: str, device: str | None, action: str, object_ids: str,
               outcome: str, reason: str | None, document_hashes: str, prev_hash: str) -> str:
    """Return the chain hash of an entry; ``object_ids`` and ``document_hashes`` are the stored JSON text."""
    fields = {
        "seq": seq, "time": time, "actor": actor, "device": device, "action": action,
        "object_ids": object_ids, "outcome": outcome, "reason": reason,
        "document_hashes": document_hashes, "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def row_hash(row: Mapping[str, Any], seq: int | None = None) -> str:
    """Recompute the hash of a stored row, optionally as if it had sequence number ``seq``."""
    return entry_hash(seq=row["seq"] if seq is None else seq, time=row["time"], actor=row["actor"],
                      device=row["device"], action=row["action"], object_ids=row["object_ids"],
                      outcome=row["outcome"], reason=row["reason"],
                      document_hashes=row["document_hashes"], prev_hash=row["prev_hash"])


def _check_fields(actor: str, action: str, object_ids: Mapping[str, Any], reason: str | None,
                  document_hashes: Sequence[str]) -> None:
    if not actor or not action:
        raise InvalidInput(N_("An audit entry needs an actor and an action."))
    for name, value in object_ids.items():
        if not _NAME.match(name) or _SECRET_WORDS & set(name.split("_")):
            raise InvalidInput(N_("The audit object id name {name} is not allowed: use a short lowercase "
                                  "name that does not look like a secret."), name=name)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > _MAX_ID_VALUE:
            raise InvalidInput(N_("The audit object id {name} must be a string of at most 500 "
                                  "characters or an integer."), name=name)
    if reason is not None and len(reason) > _MAX_REASON:
        raise InvalidInput(N_("The audit reason is longer than 2000 characters."))
    for value in document_hashes:
        if not isinstance(value, str) or not is_sha256(value):
            raise InvalidInput(N_("{value} is not a SHA-256 value: give 64 hexadecimal digits."),
                               value=str(value)[:80])


def head(connection: Connection, for_update: bool = False) -> tuple[int, str]:
    """Return ``(seq, hash)`` of the last entry, ``(0, GENESIS_HASH)`` for an empty log."""
    query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    if for_update:
        query = query.with_for_update()
    row = connection.execute(query).first()
    return (row.seq, row.hash) if row else (0, GENESIS_HASH)


def append_entry(connection: Connection, *, actor: str, action: str,
                 outcome: AuditOutcome | str = AuditOutcome.SUCCESS, device: str | None = None,
                 object_ids: Mapping[str, Any] | None = None, reason: str | None = None,
                 document_hashes: Sequence[str] = (), time: str | None = None) -> AuditEntry:
    """Append one entry inside the caller's write transaction and return it.

    Raises ``InvalidInput`` for fields that could carry a secret or content (see the module text).
    """
    object_ids = dict(object_ids or {})
    document_hashes = [value.lower() if isinstance(value, str) else value for value in document_hashes]
    _check_fields(actor, action, object_ids, reason, document_hashes)
    outcome_text = AuditOutcome(outcome).value

    last_seq, last_hash = head(connection, for_update=True)
    values = {
        "seq": last_seq + 1,
        "time": time or utc_now(),
        "actor": actor,
        "device": device,
        "action": action,
        "object_ids": canonical_json(object_ids),
        "outcome": outcome_text,
        "reason": reason,
        "document_hashes": canonical_json(sorted(set(document_hashes))),
        "prev_hash": last_hash,
    }
    values["hash"] = row_hash(values)

    connection.execute(insert(audit_log).values(**values))
    updated = connection.execute(update(audit_head).where(audit_head.c.id == 1)
                                 .values(seq=values["seq"], hash=values["hash"])).rowcount
    if not updated:
        connection.execute(insert(audit_head).values(id=1, seq=values["seq"], hash=values["hash"]))
    return entry_from_row(values)


def entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(seq=row["seq"], time=row["time"], actor=row["actor"], device=row["device"],
                      action=row["action"], object_ids=json.loads(row["object_ids"]),
                      outcome=row["outcome"], reason=row["reason"],
                      document_hashes=json.loads(row["document_hashes"]), prev_hash=row["prev_hash"],
                      hash=row["hash"])


def iter_entries(connection: Connection, after_seq: int = 0, limit: int | None = None,
                 **filters: Any) -> Iterator[AuditEntry]:
    """Yield entries in sequence order; ``filters`` match columns exactly (``action="sign"``)."""
    query = select(audit_log).where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq)
    for name, value in filters.items():
        query = query.where(audit_log.c[name] == value)
    if limit is not None:
        query = query.limit(limit)
    for row in connection.execute(query).mappings():
        yield entry_from_row(row)
