"""Checks on the file to verify before any parsing: it exists, is a regular non-empty file, and its kind."""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from verify_service.errors import InputEmpty, InputNotAFile, InputNotFound, NotAPdf
from verify_service.report import FileInfo

__all__ = ["InputFormat", "InputFile", "inspect_input", "inspect_content"]

#: Some producers write bytes before ``%PDF-``; common readers search the first 1024 bytes for it.
_PDF_HEADER_WINDOW = 1024
_CMS_SUFFIXES = (".p7s", ".p7m", ".cms", ".p7b")
_CHUNK_SIZE = 1024 * 1024


class InputFormat(enum.StrEnum):
    PDF = "pdf"
    CMS = "cms"


@dataclass(frozen=True)
class InputFile:
    path: Path
    info: FileInfo
    format: InputFormat


def _file_info(path: Path, name: str | None, allow_empty: bool = False) -> FileInfo:
    display_name = name or path.name
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise InputNotFound(ids={"path": path}, path=str(path)) from exc
    if not path.is_file():
        raise InputNotAFile(ids={"path": path}, path=str(path))
    if stat.st_size == 0 and not allow_empty:
        raise InputEmpty(ids={"file": display_name}, name=display_name)

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_SIZE):
            digest.update(chunk)
    return FileInfo(name=display_name, sha256=digest.hexdigest(), size=stat.st_size)


def inspect_input(path: str | os.PathLike[str], name: str | None = None) -> InputFile:
    """Check the file to verify and tell a PDF from a CMS signature by its first bytes.

    ``name`` is the file name to report (an upload's name); it defaults to the path's last part.
    Raises ``InputNotFound``, ``InputNotAFile``, ``InputEmpty`` or ``NotAPdf``.
    """
    path = Path(path)
    info = _file_info(path, name)

    with path.open("rb") as handle:
        head = handle.read(_PDF_HEADER_WINDOW)

    if b"%PDF-" in head:
        return InputFile(path=path, info=info, format=InputFormat.PDF)
    # DER starts with a SEQUENCE tag and PEM with an armour line. A .p7s file that is neither still goes to
    # the CMS parser, so that its error reads cms_malformed rather than not_a_pdf.
    if head[:1] == b"\x30" or head.lstrip().startswith(b"-----BEGIN"):
        return InputFile(path=path, info=info, format=InputFormat.CMS)
    if info.name.lower().endswith(_CMS_SUFFIXES):
        return InputFile(path=path, info=info, format=InputFormat.CMS)
    raise NotAPdf(ids={"file": info.name}, name=info.name)


def inspect_content(path: str | os.PathLike[str], name: str | None = None) -> InputFile:
    """Check the detached content of a CMS signature; any regular file will do, even an empty one."""
    path = Path(path)
    return InputFile(path=path, info=_file_info(path, name, allow_empty=True), format=InputFormat.CMS)
