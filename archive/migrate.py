"""Bring the archive database to the newest Alembic revision when the archive is opened."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from archive.db import read_transaction, write_transaction

__all__ = ["upgrade", "MIGRATIONS_DIR"]

_logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine) -> None:
    """Run the missing migrations, serialised with other processes by the write transaction.

    Every process that opens the archive calls this; the revision is read first without the write
    lock, so an up-to-date database costs one read.
    """
    config = _alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()

    with read_transaction(engine) as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return

    with write_transaction(engine) as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return
        _logger.info("migrating archive database from %s to %s", current or "empty", head)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
