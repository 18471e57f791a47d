"""Per-key rate limits on signed requests: a token bucket per public key, in this process.

Checked after the signature (so nobody can spend another key's budget) and before any database
work. Buckets live in memory, bounded by an LRU: a key evicted after `max_keys` newer keys have
been seen starts again with a full bucket, so sending through many keys costs as many signed
requests as the bucket would have allowed. With several coordinator processes each enforces its
own limit; a per-address limit belongs in the reverse proxy in front of them.
"""

import math
import threading
from collections import OrderedDict

from coordinator.errors import RateLimited


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000):
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> None:
        """Spend one token of `key`'s bucket, or raise RateLimited with the wait in whole seconds."""
        if self.rate_per_s <= 0:
            return  # limits off
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
            if tokens < 1.0:
                self._remember(key, tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate_per_s)
                raise RateLimited(
                    f"more than {self.rate_per_s:g} signed requests per second from this key "
                    f"(burst {self.burst}); retry after {wait}s",
                    wait,
                )
            self._remember(key, tokens - 1.0, now)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
