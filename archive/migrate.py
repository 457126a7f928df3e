"""Bring the archive database to the newest Alembic revision when the archive is opened."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from archive.db import read_transaction, write_transaction

__all__ = ["upgrade", "MIGRATIONS_DIR", "HEAD_REVISION"]

_logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Newest revision in ``migrations/versions``; a test checks it against Alembic's script directory.
#: Comparing with this constant lets an up-to-date archive open without importing Alembic (0.25 s).
HEAD_REVISION = "0001_initial"


def _current_revision(connection) -> str | None:
    try:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def upgrade(engine: Engine) -> None:
    """Run the missing migrations, serialised with other processes by the write transaction.

    Every process that opens the archive calls this; the revision is read first without the write
    lock, so an up-to-date database costs one read.
    """
    with read_transaction(engine) as connection:
        if _current_revision(connection) == HEAD_REVISION:
            return

    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with write_transaction(engine) as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current == HEAD_REVISION:
            return
        _logger.info("migrating archive database from %s to %s", current or "empty", HEAD_REVISION)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
