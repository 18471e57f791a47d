"""Warm workers: one long-lived worker process per execution profile, for short requests (the
referee's one step) that should not pay a fresh interpreter and torch import each time.

Same isolation as `sdk.worker.run_worker` — the profile is pinned in the child's environment
before torch is imported — but the child stays up and answers one JSON request per line. A child
that dies or overruns its timeout is killed and replaced on the next request.
"""

import json
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from typing import Any

from protocol.spec import ExecutionProfile
from sdk.worker import (
    _read_line_outcome,
    _result_or_raise,
    compute_profile_environment,
    resolve_runtime,
)


class WarmWorker:
    def __init__(self, profile: ExecutionProfile):
        self.profile = profile
        self.process: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self.lock = threading.Lock()
        self._ready = False  # the child has applied its profile

    def start(self) -> None:
        """Spawn the child (returns at once; the first request waits for it to be ready)."""
        if self.process is not None and self.process.poll() is None:
            return
        threads, capability = resolve_runtime(self.profile, None, None)
        env = {**os.environ, **compute_profile_environment(self.profile, threads, capability)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sdk.worker", "--serve"],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stderr_lines = []
        threading.Thread(
            target=lambda p=self.process: self.stderr_lines.extend(p.stderr), daemon=True
        ).start()
        self._ready = False

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self.lock:
            outcome = self._attempt(request, timeout)
            if outcome is None:  # it had died between requests: one fresh try
                outcome = self._attempt(request, timeout)
            return _result_or_raise(outcome, 1, self.stderr_lines)

    def _attempt(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        self.start()
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            if not self._ready:
                ready = _read_line_outcome(self.process)
                if ready is None or ready["event"] == "error":
                    return ready  # could not apply the profile: report, do not retry
                self._ready = True
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            outcome = _read_line_outcome(self.process)
        except OSError as err:  # a broken pipe: the child is gone
            self.stderr_lines.append(f"{type(err).__name__}: {err}")
            outcome = None
        finally:
            timer.cancel()
        if outcome is None:
            self.process.kill()
            self.process = None
        return outcome

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)  # reaped: an evicted worker leaves no zombie


class WorkerPool:
    """Warm workers by profile; `prewarm` starts one ahead of need (e.g. when a dispute opens).

    At most `max_workers` stay alive (each holds an interpreter and torch, ~365 MB, and whoever
    posts a job chooses its profile label): asking for another closes the least recently used
    idle one. A busy worker is never closed, so the pool exceeds the bound only while more
    rulings than that run at once."""

    def __init__(self, max_workers: int = 4) -> None:
        self.max_workers = max_workers
        self.workers: OrderedDict[str, WarmWorker] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, profile: ExecutionProfile) -> WarmWorker:
        with self.lock:
            worker = self.workers.pop(profile.label, None) or WarmWorker(profile)
            self.workers[profile.label] = worker  # most recently used last
            self._evict_idle()
        return worker

    def _evict_idle(self) -> None:
        for label in list(self.workers)[:-1]:
            if len(self.workers) <= self.max_workers:
                return
            worker = self.workers[label]
            if worker.lock.acquire(blocking=False):  # idle: nobody is running a request on it
                try:
                    worker.close()
                    del self.workers[label]
                finally:
                    worker.lock.release()

    def prewarm(self, profile: ExecutionProfile) -> None:
        worker = self.get(profile)
        with worker.lock:
            worker.start()

    def run(
        self, request: dict[str, Any], profile: ExecutionProfile, timeout: float
    ) -> dict[str, Any]:
        return self.get(profile).run(request, timeout)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
