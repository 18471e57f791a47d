"""What every service needs besides a session: settings, database, log key, clock, and the
referee's warm workers.

What lives here is per process, so with several replicas each has its own copy. None of it may
carry correctness (docs/decisions.md, "Scale out"): `state_layouts` is a pure function of the job
id, the warm workers only save start-up time, the rate limiter is a per-replica throttle, and a
dev server's protocol clock on PostgreSQL is read from the database (`SharedClock`).
"""

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import create_engine, select

from coordinator.blobstore.base import BlobStore
from coordinator.blobstore.factory import create_blob_store
from coordinator.clock import Clock
from coordinator.db import Database
from coordinator.models import LogState
from coordinator.ratelimit import RateLimiter
from coordinator.settings import Settings
from coordinator.uploads.digests import RunningDigests
from sdk.warm_worker import WorkerPool


class BoundedCache:
    """A small thread-safe LRU: values computed once per key (e.g. a job's state layout, keyed by
    job id — the hash of its spec), at most `size` kept."""

    def __init__(self, size: int = 64):
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = compute()  # outside the lock: two racing callers compute the same value
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class SharedClock(Clock):
    """A dev server's protocol clock when replicas share a PostgreSQL database: the offset is
    read from `log_state` on every reading, so advancing the clock through one replica moves
    every replica's deadlines at once. The offset only grows (POST /v1/dev/clock), so the
    larger of the stored one and the one this replica is committing is the current one. Reads
    use their own small pool: a reading inside a write transaction never waits on that pool."""

    def __init__(self, url: str):
        self._engine = create_engine(url, pool_size=2, max_overflow=14, pool_pre_ping=True)
        self._committing = 0.0

    @property
    def offset_s(self) -> float:
        with self._engine.connect() as connection:
            stored = connection.execute(
                select(LogState.clock_offset).where(LogState.id == 1)
            ).scalar_one()
        return max(stored, self._committing)

    @offset_s.setter
    def offset_s(self, value: float) -> None:
        self._committing = max(self._committing, value)

    def dispose(self) -> None:
        self._engine.dispose()


def make_clock(db: Database, dev: bool, stored_offset: float) -> Clock:
    """Only a dev server honours a stored offset: production deadlines are wall-clock time.
    SQLite is one process, so its offset can live in memory."""
    if not dev:
        return Clock()
    return Clock(stored_offset) if db.is_sqlite else SharedClock(db.url)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    key: SigningKey
    clock: Clock
    referee_workers: WorkerPool = field(default_factory=WorkerPool)
    state_layouts: BoundedCache = field(default_factory=BoundedCache)  # by job id
    upload_digests: RunningDigests = field(default_factory=RunningDigests)  # by upload id
    rate_limiter: RateLimiter = field(init=False)
    blobs: BlobStore = field(init=False)  # checkpoint, dataset and state bytes
    receiving: threading.BoundedSemaphore = field(init=False)  # request bodies streaming in

    def __post_init__(self) -> None:
        self.rate_limiter = RateLimiter(
            self.settings.rate_limit_per_s, self.settings.rate_limit_burst
        )
        self.blobs = create_blob_store(self.settings)
        self.receiving = threading.BoundedSemaphore(self.settings.max_receiving_bodies)

    def close(self) -> None:
        self.referee_workers.close()
        self.db.dispose()
        if isinstance(self.clock, SharedClock):
            self.clock.dispose()
