"""Changes to the policy file from the administrator's pages: validated, backed up, then reloaded.

Each change reads the file as TOML, edits the parsed tables, and validates the result with
``policies.parse_policy`` before anything is written. The previous file is copied to
``<policy dir>/policy-backups/<name>.<UTC time>.toml``; the new text replaces the file atomically, and
the workflow then uses the new policy. Comments in the file are not kept, because TOML writers
(tomli-w) do not carry them.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import shutil
import tomllib
from pathlib import Path
from typing import Any, Callable

import tomli_w

from policies import Policy, parse_policy

__all__ = ["read_raw_policy", "update_policy", "BACKUP_DIR"]

_logger = logging.getLogger(__name__)

BACKUP_DIR = "policy-backups"


def read_raw_policy(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def update_policy(path: Path, change: Callable[[dict[str, Any]], None], actor: str) -> tuple[Policy, Path]:
    """Apply ``change`` to the parsed policy file, validate, back up the old file, write the new one.

    Returns the new policy and the backup path. Raises ``PolicyInvalid`` (naming the bad key) before
    anything is written when the changed policy does not validate.
    """
    raw = read_raw_policy(path)
    change(raw)
    policy = parse_policy(raw, str(path))
    text = tomli_w.dumps(raw)

    backups = path.parent / BACKUP_DIR
    backups.mkdir(exist_ok=True, mode=0o700)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    backup = backups / f"{path.stem}.{stamp}.toml"
    shutil.copy2(path, backup)

    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _logger.info("policy file %s changed by %s; previous version in %s", path, actor, backup)
    return policy, backup
