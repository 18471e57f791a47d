"""The loop both daemons run: one `step()` per round until SIGTERM; errors that a later round can
fix (the coordinator restarting, a refused move, a worker that died) are logged, not fatal.
With `--metrics-port` a daemon also serves Prometheus metrics (`DaemonMetrics`, docs/daemons.md)."""

import logging
import signal
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from protocol.errors import VeritrainError
from protocol.limits import MAX_STATE_BYTES

ACCOUNT_POLL_S = 2.0  # at most one GET /v1/accounts/{key} per this many seconds, for the metrics
RATE_WINDOW_S = 10.0  # steps per second reads 0 once no progress arrived for this long


def compute_default_max_state_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The largest training state this host takes by default: a worker peaks at about 3× the
    state (docs/production.md, "Memory"), after ~1 GiB for the interpreters; the protocol's own
    limit where the memory cannot be read."""
    try:
        total_kib = next(
            int(line.split()[1])
            for line in meminfo.read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return MAX_STATE_BYTES
    return max(1, min(MAX_STATE_BYTES, (total_kib * 1024 - 2**30) // 3))


def describe_state_too_large(state_bytes: int, max_state_bytes: int) -> str | None:
    """Why a job is beyond this daemon's memory, or None when it fits."""
    if state_bytes <= max_state_bytes:
        return None
    return (
        f"its training state of {state_bytes / 2**20:,.0f} MiB is over this host's "
        f"--max-state-mib {max_state_bytes / 2**20:,.0f}"
    )


class DaemonStopping(Exception):
    """SIGTERM arrived: leave the current work where it is (it resumes on restart)."""


class DaemonMetrics:
    """One daemon's metrics, in its own registry, served on 127.0.0.1:`port` in the text format."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.steps = Counter(
            "veritrain_daemon_steps", "Training steps run (from the worker's progress)", registry=r
        )
        self.steps_per_second = Gauge(
            "veritrain_daemon_steps_per_second", "Recent training speed (0 when idle)", registry=r
        )
        self.steps_per_second.set_function(self._rate)
        self.jobs_held = Gauge(
            "veritrain_daemon_jobs_held",
            "Jobs in progress: a solver's awarded, unfinished jobs; a verifier's jobs with an "
            "active assignment",
            registry=r,
        )
        self.earnings = Counter(
            "veritrain_daemon_earnings",
            "Increases of the account's worth (available + escrow and stakes), in ledger units",
            registry=r,
        )
        self.losses = Counter(
            "veritrain_daemon_losses",
            "Decreases of the account's worth (slashes, penalties), in ledger units",
            registry=r,
        )
        self.stake_at_risk = Gauge(
            "veritrain_daemon_stake_at_risk",
            "Stake locked on jobs and the standing verifier stake, in ledger units",
            registry=r,
        )
        self.worker_restarts = Counter(
            "veritrain_daemon_worker_restarts",
            "Worker runs that redo work a previous run left unfinished",
            registry=r,
        )
        self._worth: int | None = None
        self._last_step: dict[str, int] = {}
        self._last_event: dict[str, float] = {}
        self._rate_value, self._rate_at = 0.0, 0.0
        self._started: set[str] = set()

    def serve(self, port: int) -> None:
        start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def observe_progress(self, job_id: str, step: int | None) -> None:
        """Count the steps since this job's previous progress event (a worker resumed from an
        earlier checkpoint starts a new count)."""
        if step is None:
            return
        now = time.monotonic()
        last, last_at = self._last_step.get(job_id), self._last_event.get(job_id, now)
        if last is not None and step > last:
            self.steps.inc(step - last)
            self._rate_value, self._rate_at = (step - last) / max(now - last_at, 1e-6), now
        self._last_step[job_id], self._last_event[job_id] = step, now

    def _rate(self) -> float:
        return self._rate_value if time.monotonic() - self._rate_at < RATE_WINDOW_S else 0.0

    def observe_worker_start(self, key: str, resumed: bool = False) -> None:
        """A worker starts on `key`: a restart if one ran on it before in this process, or if the
        caller knows a previous run was cut short (`resumed`)."""
        if resumed or key in self._started:
            self.worker_restarts.inc()
        self._started.add(key)

    def observe_account(self, available: int, held: dict[str, int]) -> None:
        """Earnings and losses are the changes of the account's worth since the last poll."""
        worth = available + sum(held.values())
        if self._worth is not None and worth > self._worth:
            self.earnings.inc(worth - self._worth)
        elif self._worth is not None and worth < self._worth:
            self.losses.inc(self._worth - worth)
        self._worth = worth
        self.stake_at_risk.set(sum(v for k, v in held.items() if k.startswith("stake:")))


class Daemon:
    poll_s: float = 1.0
    log = logging.getLogger("veritrain.daemon")
    metrics: DaemonMetrics | None = None  # set by serve_metrics

    def __init__(self) -> None:
        self.stopping = False
        self._account_polled = 0.0

    def serve_metrics(self, port: int | None) -> "Daemon":
        """Serve Prometheus metrics on 127.0.0.1:`port` (None: off)."""
        if port is not None:
            self.metrics = DaemonMetrics()
            self.metrics.serve(port)
        return self

    def jobs_held(self) -> int:
        return 0

    def update_metrics(self) -> None:
        """After each round: jobs held, and (throttled) the account's worth and stakes."""
        if self.metrics is None:
            return
        self.metrics.jobs_held.set(self.jobs_held())
        if time.monotonic() - self._account_polled >= ACCOUNT_POLL_S:
            account = self.client.get_account()
            self.metrics.observe_account(account.available, account.escrow_and_stakes)
            self._account_polled = time.monotonic()

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        while not self.stopping:
            try:
                self.step()
            except DaemonStopping:
                break
            except (VeritrainError, httpx.TransportError, OSError) as err:  # retried next round
                self.log.warning("step failed: %s", err, extra={"event": "daemon.step_failed"})
            try:
                self.update_metrics()
            except (VeritrainError, httpx.TransportError, OSError) as err:
                self.log.warning("metrics update failed: %s", err)
            time.sleep(self.poll_s)

    def _on_sigterm(self, *_args) -> None:
        self.stopping = True
