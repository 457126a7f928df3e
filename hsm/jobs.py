"""Bulk jobs and their per-document state in the archive database.

States of a job item (``ItemState``)::

    pending ──> recorded
       └──> failed

``pending``: not finished. Within it a document passes prepared, signed and written (published
under its final name and stored in the document store); those steps are shown by the files of the
job's partial directory and the output directory (see ``hsm.sealer``), which is what a resumed job
reads, so they need no database write of their own. ``recorded``: the document records and the
audit entry are committed, in the same transaction as this state. ``failed``: ``error_code`` says
why; nothing was published for it.

The job's plan (``plan.jsonl`` in the job directory) maps each item key to its input and output
paths; the database holds the state. Both are written before any document is signed.
"""

from __future__ import annotations

import enum
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from archive.api import Archive
from archive.records import JobRecord
from hsm.errors import JobNotFound

__all__ = ["ItemState", "JobState", "PlanEntry", "new_job_id", "job_dir", "write_plan", "read_plan",
           "count_states", "last_job_id", "get_job"]


class ItemState(str, enum.Enum):
    PENDING = "pending"
    RECORDED = "recorded"
    FAILED = "failed"


class JobState(str, enum.Enum):
    PLANNING = "planning"
    READY = "ready"
    RUNNING = "running"
    FINISHED = "finished"


#: Item states after which a document is never touched again.
TERMINAL_STATES = (ItemState.RECORDED.value, ItemState.FAILED.value)


@dataclass(frozen=True)
class PlanEntry:
    """One line of ``plan.jsonl``."""

    key: str
    source: str | None
    output: str | None


def new_job_id() -> str:
    """Return a job id that sorts by creation time: ``YYYYMMDDTHHMMSSZ-<8 hex>``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def job_dir(state_dir: Path, job_id: str) -> Path:
    """Return ``<state>/hsm/jobs/<job id>``: the plan, extracted zip entries and the lock files."""
    return state_dir / "hsm" / "jobs" / job_id


def write_plan(directory: Path, entries: Iterable[PlanEntry]) -> Path:
    """Write ``plan.jsonl`` atomically (temporary file, fsync, rename) and return its path."""
    path = directory / "plan.jsonl"
    temporary = directory / "plan.jsonl.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def read_plan(directory: Path) -> dict[str, PlanEntry]:
    """Return the plan entries by item key."""
    entries: dict[str, PlanEntry] = {}
    with (directory / "plan.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            entry = PlanEntry(**json.loads(line))
            entries[entry.key] = entry
    return entries


def get_job(archive: Archive, job_id: str) -> JobRecord:
    """Return the job record; raise ``JobNotFound``."""
    from archive.errors import RecordNotFound

    try:
        with archive.transaction() as tx:
            return tx.get_job(job_id)
    except RecordNotFound:
        raise JobNotFound(job=job_id, ids={"job": job_id}) from None


def count_states(archive: Archive, job_id: str) -> dict[str, int]:
    """Return the number of items of the job in each state (every ``ItemState`` is a key)."""
    counts = {state.value: 0 for state in ItemState}
    with archive.transaction() as tx:
        for item in tx.get_job_items(job_id):
            counts[item.state] = counts.get(item.state, 0) + 1
    return counts


def last_job_id(archive: Archive) -> str | None:
    """Return the id of the most recently created job, or None."""
    from sqlalchemy import select

    from archive.db import read_transaction
    from archive.schema import jobs

    with read_transaction(archive.engine) as connection:
        row = connection.execute(select(jobs.c.id).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                                 .limit(1)).first()
    return row[0] if row else None


def job_summary(job: JobRecord, counts: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON object that ``qsign bulk status --json`` prints."""
    return {"job": job.id, "state": job.state, "profile": job.profile, "total": job.total, "counts": counts,
            "created_at": job.created_at, "updated_at": job.updated_at,
            "out_dir": job.attributes.get("out_dir"), "manifest": job.attributes.get("manifest")}
