"""The documents of a bulk job: files, directories (recursive, with globs) and zip archives.

Each input becomes a ``PlannedInput`` with a job item key and an output path relative to the output
directory, both derived from the input's name only, so that a resumed job maps every input to the
same output. Zip archives are extracted into the job's own directory with these guards: no absolute
names, no ``..`` components, no symbolic links or other special entries, and limits on the number of
entries, the total extracted size and the compression ratio, counted on the bytes actually
decompressed rather than on the sizes the archive claims.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hsm.errors import OutputDirInvalid, ZipInvalid, ZipUnsafe
from qsign.errors import QsignError

__all__ = ["PlannedInput", "RejectedInput", "ZipLimits", "collect_inputs", "extract_zip"]

_logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ZipLimits:
    """Limits for one zip archive; exceeding any rejects the whole archive."""

    max_entries: int = 10_000
    #: Total bytes extracted from one archive.
    max_total_bytes: int = 4 * 1024 ** 3
    #: Largest ratio of extracted to compressed bytes, per entry and for the whole archive.
    max_ratio: float = 100.0


@dataclass(frozen=True)
class PlannedInput:
    """One document to seal. ``output`` is relative to the output directory."""

    key: str
    source: Path
    output: PurePosixPath


@dataclass(frozen=True)
class RejectedInput:
    """An input that is recorded as failed without being opened for signing."""

    key: str
    error_code: str
    message: str
    source: Path | None = None


def _matches(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    if include and not any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(name, g) for g in include):
        return False
    return not any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(name, g) for g in exclude)


def _walk(directory: Path, skip: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(directory, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() != skip and not d.startswith(".qsign"))
        for name in sorted(files):
            yield root_path / name


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return f"absolute path {name!r}"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return f"path traversal in {name!r}"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return f"symbolic link {name!r}"
    # Archivers that record no file type (Python's writestr, DOS zips) leave S_IFMT at zero.
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"special file {name!r}"
    if "\x00" in name:
        return "NUL byte in a name"
    return None


def extract_zip(archive_path: Path, destination: Path, limits: ZipLimits = ZipLimits()
                ) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Extract the regular files of ``archive_path`` under ``destination``.

    Returns ``(extracted, rejected)``: ``(entry name, path)`` pairs and ``(entry name, reason)`` for
    entries refused one by one (absolute, ``..``, symbolic link). Raises ``ZipUnsafe`` when a limit
    is exceeded, after removing what was extracted, and ``ZipInvalid`` for an unreadable archive.
    """
    ids = {"path": str(archive_path)}
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ZipInvalid(path=str(archive_path), reason=str(error), ids=ids) from error

    extracted: list[tuple[str, Path]] = []
    rejected: list[tuple[str, str]] = []
    total = 0
    compressed_total = 0
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_entries:
            raise ZipUnsafe(path=str(archive_path), reason=f"{len(entries)} entries, more than {limits.max_entries}",
                            ids=ids)
        try:
            for info in entries:
                if info.is_dir():
                    continue
                reason = _unsafe_reason(info)
                if reason is not None:
                    rejected.append((info.filename, reason))
                    continue
                target = destination.joinpath(*PurePosixPath(info.filename).parts)
                # The checks above exclude every way out of destination; this makes sure of it.
                if not target.resolve().is_relative_to(destination.resolve()):
                    rejected.append((info.filename, f"path traversal in {info.filename!r}"))
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # Listed before writing, so that a rejected archive leaves no partial entry behind.
                extracted.append((info.filename, target))
                compressed_total += info.compress_size
                written = 0
                with archive.open(info) as source, target.open("wb") as sink:
                    for block in iter(lambda: source.read(_COPY_CHUNK), b""):
                        written += len(block)
                        total += len(block)
                        if total > limits.max_total_bytes:
                            raise ZipUnsafe(path=str(archive_path), ids=ids,
                                            reason=f"more than {limits.max_total_bytes} bytes when extracted")
                        if written > 1024 * 1024 and written > limits.max_ratio * max(info.compress_size, 1):
                            raise ZipUnsafe(path=str(archive_path), ids=ids,
                                            reason=f"entry {info.filename!r} expands more than "
                                                   f"{limits.max_ratio:g} times (a decompression bomb)")
                        sink.write(block)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, RuntimeError) as error:
            _remove_all(extracted)
            raise ZipInvalid(path=str(archive_path), reason=str(error) or type(error).__name__, ids=ids) from error
        except QsignError:
            _remove_all(extracted)
            raise
    if total > 1024 * 1024 and total > limits.max_ratio * max(compressed_total, 1):
        _remove_all(extracted)
        raise ZipUnsafe(path=str(archive_path), ids=ids,
                        reason=f"expands more than {limits.max_ratio:g} times (a decompression bomb)")
    return extracted, rejected


def _remove_all(extracted: list[tuple[str, Path]]) -> None:
    for _name, path in extracted:
        path.unlink(missing_ok=True)


def check_output_dir(out_dir: Path, inputs: Sequence[Path]) -> None:
    """Raise ``OutputDirInvalid`` if ``out_dir`` is an input directory or a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirInvalid(path=str(out_dir), reason="it is not a directory", ids={"path": str(out_dir)})
    resolved = out_dir.resolve()
    for path in inputs:
        if path.is_dir() and path.resolve() == resolved:
            raise OutputDirInvalid(path=str(out_dir), reason="it is an input directory; outputs never go next "
                                   "to the inputs they replace", ids={"path": str(out_dir)})


def collect_inputs(inputs: Sequence[Path], out_dir: Path, extract_dir: Path, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), limits: ZipLimits = ZipLimits()
                   ) -> tuple[list[PlannedInput], list[RejectedInput]]:
    """Expand ``inputs`` into the documents to seal and the inputs rejected before signing.

    Directories are walked recursively (symbolic links to directories are not followed, and the output
    directory is skipped); ``include`` and ``exclude`` globs match the path relative to the directory
    or the file name. A ``.zip`` file or a zip inside a directory is extracted into ``extract_dir``.
    """
    check_output_dir(out_dir, inputs)
    resolved_out = out_dir.resolve()
    planned: list[PlannedInput] = []
    rejected: list[RejectedInput] = []

    def add_file(path: Path, relative: PurePosixPath) -> None:
        if path.suffix.lower() == ".zip":
            add_zip(path, relative)
            return
        planned.append(PlannedInput(key=str(relative), source=path.absolute(), output=relative))

    def add_zip(path: Path, relative: PurePosixPath) -> None:
        target = extract_dir / str(len(planned) + len(rejected))
        try:
            extracted, refused = extract_zip(path, target, limits)
        except QsignError as error:
            rejected.append(RejectedInput(key=str(relative), error_code=error.code, message=error.message("en"),
                                          source=path.absolute()))
            return
        base = relative.with_suffix("")
        for name, reason in refused:
            rejected.append(RejectedInput(key=f"{relative}/{name}", error_code=ZipUnsafe.code,
                                          message=f"The zip archive {path} was rejected: {reason}"))
        for name, extracted_path in extracted:
            entry = PurePosixPath(name)
            if _matches(str(entry), include, exclude):
                planned.append(PlannedInput(key=f"{relative}/{name}", source=extracted_path, output=base / entry))

    for path in inputs:
        if path.is_dir():
            for file in _walk(path, resolved_out):
                relative = PurePosixPath(path.resolve().name, *file.relative_to(path).parts)
                if _matches(str(PurePosixPath(*file.relative_to(path).parts)), include, exclude):
                    add_file(file, relative)
        elif path.is_symlink() and not path.exists():
            rejected.append(RejectedInput(key=path.name, error_code="input_not_found",
                                          message=f"{path} is a broken symbolic link"))
        else:
            add_file(path, PurePosixPath(path.name))
    return planned, rejected
