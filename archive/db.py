"""The archive's SQLAlchemy engine, SQLite pragmas and write transactions.

For SQLite every connection runs with ``journal_mode=WAL`` (readers never block the writer),
``foreign_keys=ON``, ``synchronous=FULL`` by default and a ``busy_timeout``. With FULL in WAL mode
SQLite syncs the WAL file at each commit, so a commit survives a power cut if the storage honours
fsync. This costs one fsync per commit.

A write transaction starts with ``BEGIN IMMEDIATE``, so it takes the one write lock at its start
and waits for it through the busy handler. A deferred transaction that upgrades from read to write
would instead fail at once with "database is locked" when another writer holds the lock. Writers
in qsign processes also queue on an ``flock`` of ``<database>.lock`` before ``BEGIN``, because the
kernel hands that lock to the next waiter at once, where SQLite's busy handler polls with sleeps of
up to 100 ms. Measured with tests/test_archive_audit.py (8 processes appending 1,000 entries each,
2-core VM, synchronous=NORMAL): 13.4 s without the queue, 10.0 s with it. The busy timeout still
guards against writers that do not take the file lock (the ``sqlite3`` shell).
Other databases (PostgreSQL) get the URL unchanged and their own default isolation.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

__all__ = ["create_archive_engine", "write_transaction", "read_transaction", "BUSY_TIMEOUT_MS"]

_logger = logging.getLogger(__name__)

#: How long a writer waits for the SQLite write lock before the busy handler gives up.
BUSY_TIMEOUT_MS = 60_000
_WRITE_OPTION = "qsign_write"


def create_archive_engine(url: str, sqlite_synchronous: str = "full") -> Engine:
    """Create the engine for ``url``; for SQLite, create the file's directory and set the pragmas.

    ``sqlite_synchronous`` is ``"full"`` or ``"normal"`` (SQLite's ``PRAGMA synchronous``).
    """
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    synchronous = {"full": "FULL", "normal": "NORMAL"}[sqlite_synchronous]
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    if parsed.database and parsed.database != ":memory:":
        engine.info_lock_path = f"{parsed.database}.lock"  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" event below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def _is_locked(error: OperationalError) -> bool:
    text = str(error.orig).lower()
    return "database is locked" in text or "database is busy" in text


@contextlib.contextmanager
def _writer_queue(engine: Engine) -> Iterator[None]:
    lock_path = getattr(engine, "info_lock_path", None)
    if lock_path is None:
        yield
        return
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def write_transaction(engine: Engine, attempts: int = 5) -> Iterator[Connection]:
    """Yield a connection inside a write transaction that commits when the block ends.

    On SQLite the transaction is ``BEGIN IMMEDIATE``. If even the busy timeout ran out while taking the
    lock, the ``BEGIN`` is retried up to ``attempts`` times; an error inside the block is never retried,
    because the block may have had effects outside the database.
    """
    with _writer_queue(engine):
        for attempt in range(1, attempts + 1):
            connection = engine.connect().execution_options(**{_WRITE_OPTION: True})
            try:
                transaction = connection.begin()
            except OperationalError as error:
                connection.close()
                if not _is_locked(error) or attempt == attempts:
                    raise
                _logger.warning("archive database busy, retrying BEGIN (attempt %d of %d)", attempt, attempts)
                time.sleep(0.05 * attempt)
                continue

            try:
                yield connection
                transaction.commit()
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise
            finally:
                connection.close()
            return


@contextlib.contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """Yield a connection inside a read transaction: one consistent snapshot of the database."""
    with engine.connect() as connection, connection.begin():
        yield connection
