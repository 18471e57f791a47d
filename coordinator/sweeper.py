"""The deadline sweeper: resolves every overdue move against whoever is late.

Each overdue item is handled in its own transaction that re-checks the deadline under a row
lock, so concurrent sweeps (a background thread, POST /v1/sweep, a second server) can never
resolve one item twice. Because all state is in SQL, a restarted server simply sweeps again.
"""

import logging
import threading
import time

from coordinator.auth import process_expired_nonces
from coordinator.runtime import Runtime

log = logging.getLogger("veritrain.coordinator.sweeper")
SWEEPS: list = []  # market handlers register here: fn(rt) -> number resolved


def process_sweep(rt: Runtime) -> int:
    resolved = 0
    for handler in SWEEPS:
        resolved += handler(rt)
    rt.db.write(lambda s: process_expired_nonces(s, time.time()))  # nonces use real time
    return resolved


class SweeperThread(threading.Thread):
    def __init__(self, rt: Runtime):
        super().__init__(name="veritrain-sweeper", daemon=True)
        self.rt = rt
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.sweep_interval_s):
            try:
                process_sweep(self.rt)
            except Exception:  # keep sweeping: one bad item must not stop every deadline
                log.exception("sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
