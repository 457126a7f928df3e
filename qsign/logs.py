"""Logging set-up shared by every command: one line per event, or JSON lines."""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["configure_logging"]


class JsonLineFormatter(logging.Formatter):
    """Format each record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool = False, json_lines: bool = False) -> None:
    """Send log lines to stderr: warnings and above, or everything with ``verbose``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # werkzeug (the test PKI server) sets its own logger to INFO and logs every request.
    logging.getLogger("werkzeug").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # pyHanko logs each failed certificate check as a warning with a traceback; qsign reports the
    # outcome itself, so the traceback is shown only with --verbose.
    logging.getLogger("pyhanko").setLevel(logging.DEBUG if verbose else logging.ERROR)
