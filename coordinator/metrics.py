"""Prometheus metrics of one coordinator app (`GET /metrics`, text exposition format).

Three sources, one registry per app (never the process-wide default: several apps in one test
process must not collide):

- `MetricsMiddleware` (pure ASGI) counts every HTTP request and times it, labelled by the
  matched route's *template* (`/v1/jobs/{job_id}`), never the raw path, so label cardinality is
  bounded by the number of routes (`<unmatched>` for paths no route matches);
- `DatabaseCollector` reads the market's gauges from the database at scrape time, in one short
  read transaction of a few aggregate queries (nothing to keep in step with writes);
- `ruling` is observed where the referee rules (`transitions.process_rule_dispute`).

Every metric is listed with its meaning in docs/coordinator.md ("Metrics").
"""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.ledger.accounts import KINDS
from coordinator.models import Assignment, Blob, Dispute, Job, LedgerAccount, LogEntry
from coordinator.routes import UNMATCHED, RouteTable
from coordinator.runtime import Runtime
from protocol.wire import SOLVER_OWES, VERIFIER_OWES, DisputeStatus, JobState

# Log entries that slash a party (a verifier's missed-move penalty is not counted: it is
# `verification.timed_out`, a penalty for lateness, not a slash for a wrong claim).
SLASH_KINDS = {"job.solver_slashed": "solver", "verifier.slashed": "verifier"}
BLOB_KINDS = ("checkpoint", "dataset", "state")
# Jobs whose sample is fixed: their segments' coverage is what the market actually checked.
COVERED_STATES = (JobState.VERIFYING, JobState.SETTLED)
# Deadlines the sweeper resolves (coordinator/sweeper.py): job states with a move due, and
# assignments whose owed move is the solver's or the verifier's.
SWEPT_JOB_STATES = (JobState.BIDDING, JobState.AWARDED, JobState.VERIFYING)
OWED_MOVES = tuple(SOLVER_OWES | VERIFIER_OWES)
RULING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CoordinatorMetrics:
    """The registry of one app and the metrics observed in-process."""

    def __init__(self, rt: Runtime):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "veritrain_http_requests",
            "HTTP requests handled, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "veritrain_http_request_duration_seconds",
            "Time from request start to the end of the response body, by route template",
            ["route", "method"],
            registry=self.registry,
        )
        self.ruling = Histogram(
            "veritrain_ruling_duration_seconds",
            "Time the referee took to rule on a dispute (its training step and the ruling's "
            "transaction; a failed referee attempt counts too)",
            buckets=RULING_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(rt))


def start_timer() -> float:
    return time.perf_counter()


def observe_ruling(rt: Runtime, started: float) -> None:
    """Record one referee ruling's duration (since `start_timer()`); a runtime built without an
    app (tests drive services directly) has no metrics."""
    metrics = getattr(rt, "metrics", None)
    if metrics is not None:
        metrics.ruling.observe(time.perf_counter() - started)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time (one read transaction)."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time only: no database read at registration

    def collect(self) -> Iterator[Metric]:
        now = self.rt.clock.now()
        with self.rt.db.read() as s:
            jobs_by_state = dict(
                s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
            disputes_open = s.execute(
                select(func.count())
                .select_from(Dispute)
                .where(Dispute.status == DisputeStatus.OPEN)
            ).scalar_one()
            ledger = dict(
                s.execute(
                    select(LedgerAccount.kind, func.sum(LedgerAccount.balance)).group_by(
                        LedgerAccount.kind
                    )
                ).all()
            )
            blobs = dict(
                s.execute(select(Blob.kind, func.sum(Blob.size)).group_by(Blob.kind)).all()
            )
            segments = s.execute(
                select(func.sum(Job.num_checkpoints - 1)).where(Job.state.in_(COVERED_STATES))
            ).scalar_one()
            pairs = (
                select(Assignment.job_id, Assignment.segment)
                .join(Job, Job.job_id == Assignment.job_id)
                .where(Job.state.in_(COVERED_STATES))
                .distinct()
                .subquery()
            )
            sampled = s.execute(select(func.count()).select_from(pairs)).scalar_one()
            slashes = dict(
                s.execute(
                    select(LogEntry.kind, func.count())
                    .where(LogEntry.kind.in_(tuple(SLASH_KINDS)))
                    .group_by(LogEntry.kind)
                ).all()
            )
            oldest = _oldest_overdue_deadline(s, now)

        jobs = GaugeMetricFamily("veritrain_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], jobs_by_state.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily("veritrain_disputes_open", "Disputes not yet ruled", disputes_open)
        balances = GaugeMetricFamily(
            "veritrain_ledger_balance",
            "Sum of ledger balances by account kind, in micro-units (mint is negative: it is "
            "where deposits come from; all kinds sum to zero)",
            labels=["kind"],
        )
        for kind in KINDS:
            balances.add_metric([kind], int(ledger.get(kind) or 0))
        yield balances
        blob_bytes = GaugeMetricFamily(
            "veritrain_blob_bytes", "Bytes of stored blobs by kind", labels=["kind"]
        )
        for kind in BLOB_KINDS:
            blob_bytes.add_metric([kind], int(blobs.get(kind) or 0))
        yield blob_bytes
        yield GaugeMetricFamily(
            "veritrain_verification_coverage_ratio",
            "Share of the segments of verifying and settled jobs that at least one verifier "
            "was assigned (drawn or volunteered); 0 when there are none",
            sampled / segments if segments else 0.0,
        )
        slash_count = CounterMetricFamily(
            "veritrain_slashes",
            "Slashes on the public log (job.solver_slashed, verifier.slashed), by party",
            labels=["party"],
        )
        for kind, party in SLASH_KINDS.items():
            slash_count.add_metric([party], slashes.get(kind, 0))
        yield slash_count
        yield GaugeMetricFamily(
            "veritrain_sweeper_lag_seconds",
            "Protocol time now minus the oldest deadline the sweeper has yet to resolve "
            "(0 if none is overdue)",
            max(0.0, now - oldest) if oldest is not None else 0.0,
        )


def _oldest_overdue_deadline(s, now: float) -> float | None:
    """The earliest past deadline among the moves the sweeper resolves (each an indexed min)."""
    candidates = [
        s.execute(
            select(func.min(Job.deadline)).where(Job.state == state, Job.deadline <= now)
        ).scalar_one()
        for state in SWEPT_JOB_STATES
    ]
    candidates.append(
        s.execute(
            select(func.min(Assignment.deadline)).where(
                Assignment.state.in_(OWED_MOVES), Assignment.deadline <= now
            )
        ).scalar_one()
    )
    candidates.append(
        s.execute(
            select(func.min(Dispute.deadline)).where(
                Dispute.status == DisputeStatus.OPEN, Dispute.deadline <= now
            )
        ).scalar_one()
    )
    found = [c for c in candidates if c is not None]
    return min(found) if found else None


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: CoordinatorMetrics, routes: list):
        self.app, self.metrics = app, metrics
        self.routes = RouteTable(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route, method = self._route(scope), scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.duration.labels(route, method).observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        """The template of the route that handled the request (or would have: a body refused
        before routing still names its route); `<unmatched>` for a path no route knows."""
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return route.path
        matched = self.routes.match(scope["method"], scope["path"])
        return matched[0] if matched else UNMATCHED
