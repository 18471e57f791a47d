"""Engines, migrations and the one way to run a write transaction.

SQLite: writes run under BEGIN IMMEDIATE (one writer at a time, taken up front, so a
read-then-write can never be overtaken); reads use a second engine with deferred BEGIN, in WAL
mode so they never wait for writers. PostgreSQL: READ COMMITTED plus explicit row locks
(SELECT … FOR UPDATE) on every row a transaction will change; serialisation failures and
deadlocks are retried.

Coordination between replicas (several processes or hosts on one PostgreSQL database) also goes
through the database: `Database.claim` and `Leadership` take PostgreSQL advisory locks, held on a
dedicated connection, so a replica that dies (or loses its connection) lets go at once. On SQLite
— one process by construction — they are in-process locks.
"""

import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
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
        if connection.dialect.name == "postgresql":
            # replicas start together: one migrates, the others wait, then find nothing to do
            key = advisory_key(_current_schema(connection), "migrations")
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _current_schema(connection: Connection) -> str:
    return connection.execute(text("SELECT current_database() || '.' || current_schema()")).scalar()


def advisory_key(schema: str, purpose: str, item: int = 0) -> int:
    """A PostgreSQL advisory lock key (signed 64-bit) for `purpose` on `item`, scoped to one
    database schema: advisory locks are server-wide, and two coordinators on one server (or
    tests in separate schemas) must not contend for each other's locks."""
    digest = hashlib.sha256(f"veritrain:{schema}:{purpose}:{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class KeyedLocks:
    """In-process locks by key (SQLite's stand-in for advisory locks); a lock is dropped once
    nobody holds or waits for it, so the table stays as small as the work in flight."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[object, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: object, wait: bool) -> Iterator[bool]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            acquired = lock.acquire(blocking=wait)
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
        finally:
            with self._guard:
                users = self._locks[key][1] - 1
                if users:
                    self._locks[key] = (lock, users)
                else:
                    del self._locks[key]


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
        self._local_claims = KeyedLocks()
        self._schema: str | None = None

    def advisory_key(self, purpose: str, item: int = 0) -> int:
        if self._schema is None:
            with self.engine.connect() as connection:
                self._schema = _current_schema(connection)
        return advisory_key(self._schema, purpose, item)

    @contextmanager
    def claim(self, purpose: str, item: int, wait: bool) -> Iterator[bool]:
        """Hold the lock on (`purpose`, `item`) across every replica for the block; yields
        whether it was obtained (`wait=False` gives up at once when another holds it). Work
        done under a claim must still re-check its preconditions in its own transaction: a
        claim keeps replicas from doing work twice, row locks keep the work correct."""
        if self.is_sqlite:
            with self._local_claims.hold((purpose, item), wait) as acquired:
                yield acquired
            return
        key = self.advisory_key(purpose, item)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if wait:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                acquired = True
            else:
                result = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
                acquired = bool(result.scalar())
            try:
                yield acquired
            finally:
                if acquired:
                    _unlock_or_discard(conn, key)

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

    def leadership(self, purpose: str) -> "Leadership":
        return Leadership(self, purpose)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _unlock_or_discard(conn: Connection, key: int) -> None:
    """Release an advisory lock; a connection that cannot is discarded (closing it releases every
    lock its session held), so a lock never leaks back into the pool."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    except DBAPIError:
        conn.invalidate()


class Leadership:
    """One holder at a time across all replicas (the sweeper's): a session-level advisory lock
    on a connection kept for as long as this replica leads. `is_leader()` is called before each
    round of work: it takes the lock when free, and checks a held one's connection is still
    alive (a lost connection means the server has already released the lock to someone else)."""

    def __init__(self, db: Database, purpose: str):
        self.db, self.purpose = db, purpose
        self._conn: Connection | None = None

    def is_leader(self) -> bool:
        if self.db.is_sqlite:
            return True  # one process by construction
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1"))
                return True
            return self._try_acquire()
        except DBAPIError:
            self.release()
            return False

    def _try_acquire(self) -> bool:
        key = self.db.advisory_key(self.purpose)
        conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            acquired = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
            acquired = bool(acquired.scalar())
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if acquired:
            self._conn = conn
        else:
            conn.close()
        return acquired

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # invalidate rather than unlock: closing the session is what releases the lock, even
        # when the connection is already broken
        conn.invalidate()
        conn.close()
