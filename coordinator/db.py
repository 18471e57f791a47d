"""Engines, migrations and the one way to run a write transaction.

SQLite: writes run under BEGIN IMMEDIATE (one writer at a time, taken up front, so a
read-then-write can never be overtaken); reads use a second engine with deferred BEGIN, in WAL
mode so they never wait for writers. PostgreSQL: READ COMMITTED plus explicit row locks
(SELECT … FOR UPDATE) on every row a transaction will change; serialisation failures and
deadlocks are retried.
"""

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from coordinator.errors import WriteConflict
from protocol.errors import InternalError, VeritrainError

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MAX_ATTEMPTS = 12
RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _configure_sqlite(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, immediate: bool = True) -> Engine:
    if _is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=8,
            max_overflow=32,
        )
        _configure_sqlite(engine, immediate)
        return engine
    return create_engine(url, pool_size=16, max_overflow=48, pool_pre_ping=True)


def get_alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    config = get_alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_database(engine: Engine, revision: str = "base") -> None:
    config = get_alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


class Database:
    """The write and read engines of one coordinator."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = _is_sqlite(url)
        self.engine = make_engine(url, immediate=True)
        self.read_engine = make_engine(url, immediate=False) if self.is_sqlite else self.engine
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        # SQLite has one writer at a time anyway; queueing writers here, rather than in SQLite's
        # busy handler (which sleeps and polls), keeps tail latency flat under concurrency.
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one write transaction, retrying lock conflicts with jittered backoff.
        A domain error (VeritrainError) rolls back and propagates at once."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self._write_lock, self._writer() as session, session.begin():
                    return fn(session)
            except VeritrainError:
                raise
            except (IntegrityError, OperationalError, DBAPIError) as err:
                if isinstance(err, IntegrityError) and not self._is_retryable(err):
                    # a CHECK constraint caught what the transaction's own checks missed
                    raise InternalError(f"database constraint violated: {err.orig}") from err
                if not self._is_retryable(err) or attempt == MAX_ATTEMPTS - 1:
                    if isinstance(err, IntegrityError | OperationalError):
                        raise WriteConflict(
                            f"concurrent write kept conflicting: {type(err.orig).__name__}"
                        ) from err
                    raise
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise WriteConflict("unreachable")

    def _is_retryable(self, err: DBAPIError) -> bool:
        # A unique-key race means another writer committed first: rerunning sees its row.
        if isinstance(err, IntegrityError):
            return "UNIQUE" in str(err.orig) or getattr(err.orig, "sqlstate", None) == "23505"
        if self.is_sqlite:
            return "locked" in str(err.orig) or "busy" in str(err.orig)
        return getattr(err.orig, "sqlstate", None) in RETRYABLE_SQLSTATES

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
