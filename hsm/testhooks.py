"""Named points where a test can kill the process, to check that a bulk job resumes correctly.

``QSIGN_BULK_KILL_AT="POINT:N"`` makes the process that reaches ``POINT`` for the ``N``-th time kill
itself with SIGKILL (``N`` defaults to 1). ``QSIGN_BULK_KILL_ROLE`` limits it to ``parent`` or
``worker``. With ``QSIGN_BULK_KILL_MARKER=PATH`` only the first process to get there kills itself:
it creates PATH first, and no process kills itself once PATH exists (replacement workers inherit the
same environment). ``QSIGN_BULK_PAUSE_AT="POINT:N"`` with ``QSIGN_BULK_PAUSE_DIR=DIR`` makes the
process that reaches ``POINT`` for the ``N``-th time create ``DIR/paused`` and wait until
``DIR/resume`` exists (at most ``PAUSE_SECONDS``), so that a test can act on the token meanwhile.
``QSIGN_BULK_DROP_SESSION=N`` closes a worker's PKCS#11 session under its key before its
``N``-th signature, as a token that lost the session would. Without these variables the hooks cost
one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["kill_point", "should_drop_session", "WORKER_POINTS", "PARENT_POINTS"]

#: Points in a worker process, in the order a document passes them.
WORKER_POINTS = ("prepared", "before-sign", "after-sign", "before-rename", "before-publish", "after-publish",
                 "after-store")
#: Points in the scheduling (parent) process.
PARENT_POINTS = ("before-record", "after-record", "after-plan")

#: Longest wait of a paused process for its ``resume`` file, in seconds.
PAUSE_SECONDS = 60.0

_counts: dict[str, int] = {}
_pause_counts: dict[str, int] = {}
_signatures = 0


def _target() -> tuple[str, int] | None:
    value = os.environ.get("QSIGN_BULK_KILL_AT")
    if not value:
        return None
    point, _, count = value.partition(":")
    return point, int(count or 1)


def kill_point(point: str, role: str) -> None:
    """SIGKILL this process (or pause it) when the test environment names ``point`` for this pass."""
    _pause_point(point)
    target = _target()
    if target is None or target[0] != point:
        return
    wanted_role = os.environ.get("QSIGN_BULK_KILL_ROLE")
    if wanted_role and wanted_role != role:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != target[1]:
        return
    marker = os.environ.get("QSIGN_BULK_KILL_MARKER")
    if marker:
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def _pause_point(point: str) -> None:
    value = os.environ.get("QSIGN_BULK_PAUSE_AT")
    directory = os.environ.get("QSIGN_BULK_PAUSE_DIR")
    if not value or not directory:
        return
    wanted, _, count = value.partition(":")
    if wanted != point:
        return
    _pause_counts[point] = _pause_counts.get(point, 0) + 1
    if _pause_counts[point] != int(count or 1):
        return
    (Path(directory) / "paused").touch()
    deadline = time.monotonic() + PAUSE_SECONDS
    while not (Path(directory) / "resume").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def should_drop_session() -> bool:
    """Return true before the signature that ``QSIGN_BULK_DROP_SESSION`` names (counted per worker)."""
    global _signatures
    value = os.environ.get("QSIGN_BULK_DROP_SESSION")
    if not value:
        return False
    _signatures += 1
    return _signatures == int(value)
