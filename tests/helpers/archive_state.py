"""State dirs for archive tests: a ``qsign.toml`` with an ``[archive]`` section, and tampering tools.

``make_archive_state`` writes a config whose PKCS#11, trust and token entries point (by absolute
path) at the session's ``softhsm_state``. An archive in any tmp dir then signs checkpoints with the
session's SoftHSM2 ``seal`` key, in this process and in ``qsign`` subprocesses alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

from qsign.config import apply_environment, load_config, write_config

#: Label of the AES key-encryption key that archive tests create on the session's qsign-hsm token.
TEST_KEK_LABEL = "archive-kek-test"


def make_archive_state(target: Path, softhsm_state: Path | None = None, **archive: Any) -> Path:
    """Write ``target/qsign.toml`` with ``[archive]`` set to ``archive`` and return ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {}
    if softhsm_state is not None:
        source = tomllib.loads((softhsm_state / "qsign.toml").read_text(encoding="utf-8"))

        def absolute(value: str) -> str:
            return str(softhsm_state / value) if not Path(value).is_absolute() else value

        raw["pkcs11"] = dict(source["pkcs11"], softhsm_conf=absolute(source["pkcs11"]["softhsm_conf"]))
        raw["trust"] = {name: [absolute(path) for path in paths] for name, paths in source["trust"].items()}
        raw["tokens"] = {name: dict(table, pin_file=absolute(table["pin_file"]))
                         for name, table in source["tokens"].items()}
        raw["tokens"]["archive_kek"] = dict(raw["tokens"]["seal"], key=TEST_KEK_LABEL)
    raw["archive"] = archive
    write_config(target / "qsign.toml", raw)
    return target


def open_archive(state_dir: Path):
    """Open the archive of ``state_dir`` in this process (after setting SOFTHSM2_CONF)."""
    from archive.api import Archive

    config = load_config(state_dir)
    apply_environment(config)
    return Archive.open(state_dir, config)


def database(state_dir: Path) -> sqlite3.Connection:
    """Open the archive database directly, as someone tampering with it would."""
    connection = sqlite3.connect(state_dir / "archive" / "archive.db", isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter with ``args`` as ``sys.argv[1:]``."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def verify_json(state_dir: Path, language: str = "en", in_subprocess: bool = False) -> tuple[int, dict[str, Any]]:
    """Run ``qsign archive verify --json`` and return its exit code and report.

    By default the command's parser and handler run in this process (a subprocess costs about a
    second of imports); ``in_subprocess=True`` runs the real console command.
    """
    arguments = ["archive", "verify", "--json", "--lang", language, "--state-dir", str(state_dir)]
    if in_subprocess:
        from conftest import run_qsign

        completed = run_qsign(*arguments)
        assert completed.stdout, completed.stderr
        return completed.returncode, json.loads(completed.stdout)

    from qsign.cli import build_parser

    args = build_parser().parse_args(arguments)
    args.language = language
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = args.handler(args)
    return code, json.loads(output.getvalue())


def finding_codes(report: dict[str, Any], severities: tuple[str, ...] = ("error", "warning")) -> list[str]:
    return [finding["code"] for finding in report["findings"] if finding["severity"] in severities]
