"""What every service needs besides a session: settings, database, log key, clock, and the
referee's warm workers."""

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from coordinator.clock import Clock
from coordinator.db import Database
from coordinator.ratelimit import RateLimiter
from coordinator.settings import Settings
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


@dataclass
class Runtime:
    settings: Settings
    db: Database
    key: SigningKey
    clock: Clock
    referee_workers: WorkerPool = field(default_factory=WorkerPool)
    state_layouts: BoundedCache = field(default_factory=BoundedCache)  # by job id
    rate_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limiter = RateLimiter(
            self.settings.rate_limit_per_s, self.settings.rate_limit_burst
        )
