"""The deadline sweeper: resolves every overdue move against whoever is late.

Each overdue item is handled in its own transaction that re-checks the deadline under the job's
row lock, so concurrent sweeps (the background thread, POST /v1/sweep, a second server) never
resolve one item twice. All state is in SQL: a restarted server simply sweeps again.
With several replicas, one background sweeper leads at a time (`db.Leadership`, an advisory lock
on PostgreSQL): the others stand by and take over within a sweep interval when it dies. Leading
saves duplicated work and referee runs; correctness never depends on it (row locks above).
The ruling phase is swept like every other: a referee failure is counted, retried on the next
sweep up to `referee_attempts` times, and a missed ruling deadline ends the dispute
(`protocol.dispute.RULING_FAILURE`), so no dispute stays open forever.
"""

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from coordinator.auth import process_expired_nonces
from coordinator.disputes import repository as disputes_repository
from coordinator.jobs import repository as jobs_repository
from coordinator.runtime import Runtime
from coordinator.transitions import (
    process_dispute_deadline,
    process_overdue_assignment,
    process_overdue_awarded,
    process_overdue_bidding,
    process_overdue_verifying,
    process_rule_dispute,
)
from coordinator.verification import repository as verification_repository
from protocol.errors import VeritrainError
from protocol.wire import SOLVER_OWES, VERIFIER_OWES, DisputeStatus, JobState

log = logging.getLogger("veritrain.coordinator.sweeper")
BATCH = 200
OWED_MOVES = tuple(SOLVER_OWES | VERIFIER_OWES)


# What each sweep resolves, and the id its key is: a field of the sweep's log lines.
SWEPT = {
    "process_overdue_bidding": ("job_id", "bidding closed"),
    "process_overdue_awarded": ("job_id", "awarded solver overdue"),
    "process_overdue_verifying": ("job_id", "verification concluded"),
    "process_overdue_assignment": ("assignment_id", "verifier overdue"),
    "process_dispute_deadline": ("dispute_id", "dispute move overdue"),
}


def _each(rt: Runtime, keys: list, fn: Callable[[Session, Runtime, object], bool]) -> int:
    done = 0
    id_field, what = SWEPT.get(fn.__name__, ("key", fn.__name__))
    for key in keys:
        ids = {id_field: key, "sweep": fn.__name__}
        try:
            resolved = bool(rt.db.write(lambda s, k=key: fn(s, rt, k)))
        except VeritrainError:
            log.exception(
                "sweeping %s %s failed", fn.__name__, key, extra={"event": "sweep.failed", **ids}
            )
            continue
        done += resolved
        if resolved:
            log.info("%s: %s", what, str(key)[:12], extra={"event": "sweep.resolved", **ids})
    return done


def process_sweep(rt: Runtime, rule_disputes: bool = False) -> int:
    """Resolve overdue deadlines (and, from the background thread, open disputes)."""
    now = rt.clock.now()
    with rt.db.read() as s:
        bidding = jobs_repository.get_overdue_job_ids(s, JobState.BIDDING, now, BATCH)
        awarded = jobs_repository.get_overdue_job_ids(s, JobState.AWARDED, now, BATCH)
        verifying = jobs_repository.get_overdue_job_ids(s, JobState.VERIFYING, now, BATCH)
        assignments = [
            a.id for a in verification_repository.get_overdue_assignments(s, OWED_MOVES, now, BATCH)
        ]
        overdue_disputes = disputes_repository.get_overdue_open_dispute_ids(s, now, BATCH)
        disputes = disputes_repository.get_open_dispute_ids(s, BATCH) if rule_disputes else []
    done = _each(rt, bidding, process_overdue_bidding) + _each(rt, awarded, process_overdue_awarded)
    done += _each(rt, assignments, process_overdue_assignment)
    done += _each(rt, overdue_disputes, process_dispute_deadline)
    done += _each(rt, verifying, process_overdue_verifying)
    for dispute_id in disputes:
        try:
            # another replica ruling on it already: skip, never run the referee twice at once
            view = process_rule_dispute(rt, dispute_id, wait=False)
            done += 1
        except VeritrainError:
            log.exception(
                "ruling on dispute %s failed",
                dispute_id,
                extra={"event": "sweep.failed", "dispute_id": dispute_id},
            )
            continue
        if view.status != DisputeStatus.OPEN:  # ruled (or ended) by this sweep
            log.info(
                "dispute %s ruled: %s wins (%s)",
                dispute_id,
                view.winner,
                view.reason,
                extra={
                    "event": "dispute.ruled",
                    "dispute_id": dispute_id,
                    "job_id": view.job_id,
                    "assignment_id": view.assignment_id,
                    "winner": view.winner,
                    "dispute_step": view.dispute_step,
                    "dispute_chunk": view.dispute_chunk,
                },
            )
    rt.db.write(lambda s: process_expired_nonces(s, time.time()))  # nonces use real time
    return done


class SweeperThread(threading.Thread):
    def __init__(self, rt: Runtime):
        super().__init__(name="veritrain-sweeper", daemon=True)
        self.rt = rt
        self.stopped = threading.Event()

    def run(self) -> None:
        leadership = self.rt.db.leadership("sweeper")
        leading = False
        try:
            while not self.stopped.wait(self.rt.settings.sweep_interval_s):
                leading = self._note_leadership(leading, leadership.is_leader())
                if not leading:
                    continue
                try:
                    process_sweep(self.rt, rule_disputes=True)
                except Exception:  # keep sweeping: one bad item must not stop every deadline
                    log.exception("sweep failed", extra={"event": "sweep.failed"})
        finally:
            leadership.release()

    @staticmethod
    def _note_leadership(was_leading: bool, leading: bool) -> bool:
        if leading != was_leading:
            what = "leads" if leading else "no longer leads"
            log.info("this replica %s the sweep", what, extra={"event": "sweep.leadership"})
        return leading

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
