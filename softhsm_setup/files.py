"""Atomic file writes with the file mode set before any byte is written."""

from __future__ import annotations

import enum
import os
from pathlib import Path

__all__ = ["Status", "ensure_directory", "write_file"]


class Status(enum.Enum):
    """Outcome of ``qsign softhsm init`` for one file, token, key or certificate."""

    CREATED = "created"
    UPDATED = "updated"
    EXISTS = "exists"


def ensure_directory(path: Path, mode: int) -> bool:
    """Create ``path`` (and its parents) with ``mode`` when missing; return whether it was created.

    An existing directory keeps its mode, because it may be a directory the user made on purpose.
    """
    if path.is_dir():
        return False

    path.mkdir(parents=True, mode=mode)
    os.chmod(path, mode)  # mkdir applies the umask to mode
    return True


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically: temporary file with ``mode``, fsync, rename.

    The temporary file is created with ``mode`` already set, so a private key or PIN file is never
    readable by others, not even while it is being written.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
