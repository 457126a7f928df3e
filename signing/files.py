"""Checks on the file to sign and on the output path, and atomic writing of the output.

An output file appears only complete: it is written to a temporary file in the same directory,
flushed to disk with ``fsync`` and renamed over the target. On any error the temporary file is removed,
so a failed signature leaves no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from signing.errors import InputEmpty, InputNotFile, InputNotFound, NotAPdf, OutputInvalid

__all__ = ["check_input_file", "check_pdf_header", "check_output_path", "atomic_output", "is_pdf"]

_logger = logging.getLogger(__name__)

#: PDF readers accept the ``%PDF-`` header anywhere in the first 1,024 bytes (ISO 32000-2, 7.5.2 note).
PDF_HEADER_WINDOW = 1024


def check_input_file(path: Path) -> int:
    """Return the size of the regular, non-empty file at ``path``.

    Raises ``InputNotFound``, ``InputNotFile`` (a directory, device or FIFO) or ``InputEmpty``.
    """
    ids = {"path": str(path)}
    try:
        status = path.stat()
    except FileNotFoundError as error:
        raise InputNotFound(path=str(path), ids=ids) from error

    if not path.is_file():
        raise InputNotFile(path=str(path), ids=ids)
    if status.st_size == 0:
        raise InputEmpty(path=str(path), ids=ids)
    return status.st_size


def is_pdf(path: Path) -> bool:
    """Return whether the first 1,024 bytes of ``path`` contain the ``%PDF-`` header."""
    with path.open("rb") as handle:
        return b"%PDF-" in handle.read(PDF_HEADER_WINDOW)


def check_pdf_header(path: Path) -> None:
    """Raise ``NotAPdf`` unless ``path`` starts with a PDF header."""
    if not is_pdf(path):
        raise NotAPdf(path=str(path), ids={"path": str(path)})


def check_output_path(output: Path, input_path: Path) -> None:
    """Raise ``OutputInvalid`` if ``output`` is a directory, is the input, or has no existing parent directory."""
    ids = {"path": str(output)}
    if output.is_dir():
        raise OutputInvalid(path=str(output), reason="it is a directory", ids=ids)
    if not output.parent.is_dir():
        raise OutputInvalid(path=str(output), reason="its directory does not exist", ids=ids)
    if output.exists() and os.path.samefile(output, input_path):
        raise OutputInvalid(path=str(output), reason="it is the input file; choose another output path", ids=ids)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file opened ``w+b`` that replaces ``path`` when the block ends without error.

    The file is created in ``path``'s directory with mode 0600 (``mkstemp``). On success it gets the
    mode a new file gets under the process umask (read at import), is fsynced and renamed to
    ``path``, and the directory is fsynced. On an exception it is removed and the exception propagates.
    """
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise

    _fsync_directory(path.parent)
    _logger.debug("wrote %s", path)


def _read_umask() -> int:
    # os.umask can only be read by setting it. Done once at import, because setting it races with
    # other threads that create files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
