"""The deadline sweeper: resolves every overdue move against whoever is late.

Each overdue item is handled in its own transaction that re-checks the deadline under the job's
row lock, so concurrent sweeps (the background thread, POST /v1/sweep, a second server) never
resolve one item twice. All state is in SQL: a restarted server simply sweeps again.
"""

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from coordinator.auth import process_expired_nonces
from coordinator.disputes import repository as disputes_repository
from coordinator.disputes.service import process_dispute_deadline, process_rule_dispute
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.service import AWARDED, BIDDING, VERIFYING, process_award
from coordinator.models import Assignment
from coordinator.runtime import Runtime
from coordinator.verification import repository as verification_repository
from coordinator.verification.service import (
    CANCELLED,
    SOLVER_OWES,
    VERIFIER_OWES,
    process_conclusion,
    process_solver_failure,
    process_verifier_timeout,
)
from protocol.errors import VeritrainError

log = logging.getLogger("veritrain.coordinator.sweeper")
BATCH = 200


def _is_due(deadline: float, rt: Runtime) -> bool:
    return deadline <= rt.clock.now()


def process_overdue_bidding(session: Session, rt: Runtime, job_id: str) -> bool:
    job = jobs_repository.lock_job(session, job_id)
    if job.state != BIDDING or not _is_due(job.deadline, rt):
        return False
    process_award(session, rt, job_id)
    return True


def process_overdue_awarded(session: Session, rt: Runtime, job_id: str) -> bool:
    job = jobs_repository.lock_job(session, job_id)
    if job.state != AWARDED or not _is_due(job.deadline, rt):
        return False
    late_commit = job.commit_deadline is not None and _is_due(job.commit_deadline, rt)
    process_solver_failure(session, rt, job, "solver_missed_commit" if late_commit else "solver_missed_heartbeat")
    return True


def process_overdue_verifying(session: Session, rt: Runtime, job_id: str) -> bool:
    return process_conclusion(session, rt, jobs_repository.lock_job(session, job_id))


def process_overdue_assignment(session: Session, rt: Runtime, assignment_id: int) -> bool:
    job = jobs_repository.lock_job(session, session.get(Assignment, assignment_id).job_id)
    assignment = verification_repository.lock_assignment(session, assignment_id)
    if not _is_due(assignment.deadline, rt) or assignment.state not in SOLVER_OWES + VERIFIER_OWES:
        return False
    if job.state != VERIFYING:
        assignment.state = CANCELLED
    elif assignment.state in SOLVER_OWES:
        process_solver_failure(session, rt, job, f"solver_missed_move_{assignment.state}")
    else:
        process_verifier_timeout(session, rt, job, assignment)
    return True


def _each(rt: Runtime, keys: list, fn: Callable[[Session, Runtime, object], bool]) -> int:
    done = 0
    for key in keys:
        try:
            done += bool(rt.db.write(lambda s, k=key: fn(s, rt, k)))
        except VeritrainError:
            log.exception("sweeping %s %s failed", fn.__name__, key)
    return done


def process_sweep(rt: Runtime, rule_disputes: bool = False) -> int:
    """Resolve overdue deadlines (and, from the background thread, open disputes)."""
    now = rt.clock.now()
    with rt.db.read() as s:
        bidding = jobs_repository.get_overdue_job_ids(s, BIDDING, now, BATCH)
        awarded = jobs_repository.get_overdue_job_ids(s, AWARDED, now, BATCH)
        verifying = jobs_repository.get_overdue_job_ids(s, VERIFYING, now, BATCH)
        assignments = [a.id for a in verification_repository.get_overdue_assignments(
            s, SOLVER_OWES + VERIFIER_OWES, now, BATCH)]
        overdue_disputes = disputes_repository.get_overdue_open_dispute_ids(s, now, BATCH)
        disputes = disputes_repository.get_open_dispute_ids(s, BATCH) if rule_disputes else []
    done = _each(rt, bidding, process_overdue_bidding) + _each(rt, awarded, process_overdue_awarded)
    done += _each(rt, assignments, process_overdue_assignment)
    done += _each(rt, overdue_disputes, process_dispute_deadline)
    done += _each(rt, verifying, process_overdue_verifying)
    for dispute_id in disputes:
        try:
            process_rule_dispute(rt, dispute_id)
            done += 1
        except VeritrainError:
            log.exception("ruling on dispute %s failed", dispute_id)
    rt.db.write(lambda s: process_expired_nonces(s, time.time()))  # nonces use real time
    return done


class SweeperThread(threading.Thread):
    def __init__(self, rt: Runtime):
        super().__init__(name="veritrain-sweeper", daemon=True)
        self.rt = rt
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.sweep_interval_s):
            try:
                process_sweep(self.rt, rule_disputes=True)
            except Exception:  # keep sweeping: one bad item must not stop every deadline
                log.exception("sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
