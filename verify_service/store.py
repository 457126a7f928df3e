"""Filed reports: each verification report is kept as ``<state>/verify_service/reports/<id>.json``.

A report file is written once, atomically (temporary file, fsync, rename), and never changed. The id is
32 lower-case hexadecimal digits, which is checked before any path is built from it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from verify_service.errors import ReportNotFound

__all__ = ["ReportStore", "is_report_id"]

_logger = logging.getLogger(__name__)
_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def is_report_id(value: str) -> bool:
    return bool(_ID_PATTERN.match(value))


class ReportStore:
    """The filed reports of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "verify_service" / "reports"

    def save(self, report: dict[str, Any]) -> Path:
        """Write a report (the JSON object of ``Report.to_dict``) under its id; return the file path."""
        report_id = report["id"]
        if not is_report_id(report_id):
            raise ValueError(f"invalid report id {report_id!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{report_id}.json"
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(report, handle, ensure_ascii=False, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _logger.info("report %s filed for %s", report_id, report["file"]["sha256"])
        return path

    def load(self, report_id: str) -> dict[str, Any]:
        """Return a filed report; raise ``ReportNotFound`` for an unknown or malformed id."""
        if not is_report_id(report_id):
            raise ReportNotFound(ids={"report_id": report_id}, report_id=report_id)
        try:
            return json.loads((self.directory / f"{report_id}.json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ReportNotFound(ids={"report_id": report_id}, report_id=report_id) from exc
