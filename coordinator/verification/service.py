"""Commitments, verifier selection and the commit/reveal of verification results.

Per assignment (verifier v replays segment i → i+1), whose move it is:
    awaiting_start  solver must upload checkpoint i           (late: solver slashed)
    assigned        v must commit H(root ‖ salt)              (late: v times out, slashed)
    committed       solver must upload checkpoint i+1, which it may only do once every
                    verifier of segment i has committed       (late: solver slashed)
    revealable      v must reveal (root, salt)                (late: v times out, slashed)
    disputed                                                  (the referee owes a ruling)
    agreed | upheld | timed_out | rejected | cancelled        (no move due)
Lock order everywhere: job row, then assignment rows, then ledger rows, then the log.
"""

import json

from sqlalchemy.orm import Session

from coordinator.errors import Forbidden, InvalidState, NotFound
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.payouts import compute_slash_legs
from coordinator.jobs.schemas import CommitmentRequest, JobEventView
from coordinator.jobs.service import (
    AWARDED,
    FAR_FUTURE,
    VERIFYING,
    _require_solver,
    process_settlement,
    process_solver_fault,
)
from coordinator.ledger.accounts import available, stake
from coordinator.ledger.service import get_balance, process_movement, transfer
from coordinator.log.repository import lock_log_state
from coordinator.models import Assignment, Job, Verifier
from coordinator.runtime import Runtime
from coordinator.verification import repository
from coordinator.verification.schemas import AssignmentView, RegisterVerifierRequest, VerifierView
from protocol.errors import InvalidInput
from protocol.sampling import (
    compute_eligible_verifiers,
    compute_replacement_seed,
    compute_segment_choice,
    compute_selection_seed,
    compute_verifier_choice,
)
from protocol.trajectory import Commitment, is_valid_commitment_signature
from sdk.client import compute_verification_commit

WAIT_START, ASSIGNED, COMMITTED, REVEALABLE = "awaiting_start", "assigned", "committed", "revealable"
AGREED, DISPUTED, TIMED_OUT, REJECTED, CANCELLED = "agreed", "disputed", "timed_out", "rejected", "cancelled"
UPHELD = "upheld"  # the verifier's challenge won at the referee
ACTIVE = (WAIT_START, ASSIGNED, COMMITTED, REVEALABLE, DISPUTED)
SOLVER_OWES = (WAIT_START, COMMITTED)
VERIFIER_OWES = (ASSIGNED, REVEALABLE)


# --- verifiers ---------------------------------------------------------------------------------


def process_register_verifier(session: Session, rt: Runtime, who: str,
                              req: RegisterVerifierRequest) -> VerifierView:
    """Register (or update) the profiles a verifier can replay and add to its standing stake."""
    profiles = sorted(set(req.profiles))
    if any(not p or len(p) > 128 for p in profiles):
        raise InvalidInput("profile labels must be 1-128 characters", "profiles")
    verifier = repository.get_verifier(session, who)
    if verifier is None:
        verifier = Verifier(public_key=who, profiles="[]", registered_at=rt.clock.now())
        session.add(verifier)
    verifier.profiles = json.dumps(profiles)
    session.flush()
    entry = process_movement(session, rt, "verifier.registered",
                             {"verifier": who, "profiles": profiles, "stake_added": req.stake},
                             transfer(available(who), stake(who), req.stake))
    return VerifierView(public_key=who, profiles=profiles, stake=get_balance(session, stake(who)),
                        log_index=entry.index)


def process_withdraw_stake(session: Session, rt: Runtime, who: str, amount: int) -> VerifierView:
    """Return standing stake to the verifier's balance, never while it owes or awaits a move
    (an assignment or dispute in progress could still slash it)."""
    verifier = repository.get_verifier(session, who)
    if verifier is None:
        raise NotFound("not a registered verifier")
    if repository.is_verifier_busy(session, who, ACTIVE):
        raise InvalidState("finish your open assignments and disputes before withdrawing stake")
    entry = process_movement(session, rt, "verifier.withdrew", {"verifier": who, "amount": amount},
                             transfer(stake(who), available(who), amount))
    return VerifierView(public_key=who, profiles=json.loads(verifier.profiles),
                        stake=entry.balances[stake(who)], log_index=entry.index)


# --- commitment and selection ------------------------------------------------------------------


def _parse_commitment(job: Job, solver: str, req: CommitmentRequest) -> tuple[Commitment, bytes]:
    commitment = Commitment.from_json(req.commitment)
    if commitment.job_id.hex() != job.job_id:
        raise InvalidInput("commitment is for another job", "commitment.job_id")
    if commitment.num_checkpoints != job.num_checkpoints:
        raise InvalidInput(f"this job has {job.num_checkpoints} checkpoints", "commitment.num_checkpoints")
    signature = bytes.fromhex(req.signature)
    if not is_valid_commitment_signature(bytes.fromhex(solver), commitment, signature):
        raise InvalidInput("not the solver's signature over this commitment", "signature")
    return commitment, signature


def _eligible_verifiers(session: Session, job: Job) -> list[tuple[str, int]]:
    candidates = [(v.public_key, balance, json.loads(v.profiles))
                  for v, balance in repository.get_verifier_stakes(session)]
    return compute_eligible_verifiers(candidates, job.profile_label, (job.solver, job.submitter))


def process_commitment(session: Session, rt: Runtime, solver: str, job_id: str,
                       req: CommitmentRequest) -> JobEventView:
    job = jobs_repository.lock_job(session, job_id)
    _require_solver(job, solver, AWARDED, rt.clock.now())
    commitment, signature = _parse_commitment(job, solver, req)
    # The seed uses the log head this very entry will link to: fixed by the log lock, public.
    prev = bytes.fromhex(lock_log_state(session).last_hash)
    seed = compute_selection_seed(bytes(commitment.trajectory_root), signature, prev)
    verifiers = compute_verifier_choice(seed, _eligible_verifiers(session, job), job.num_verifiers)
    segments = compute_segment_choice(seed, job.num_checkpoints - 1, job.num_segments)
    now = rt.clock.now()
    for verifier in verifiers:
        for segment in segments:
            session.add(Assignment(job_id=job_id, verifier=verifier, segment=segment, state=WAIT_START,
                                   deadline=now + rt.settings.move_timeout_s))
    job.state, job.deadline = VERIFYING, now + rt.settings.challenge_window_s
    job.trajectory_root = commitment.trajectory_root.hex()
    job.final_model_root = commitment.final_model_root.hex()
    job.commitment_signature, job.selection_seed = signature.hex(), seed.hex()
    data = {**commitment.to_json(), "signature": signature.hex(), "seed": seed.hex(),
            "verifiers": verifiers, "segments": segments}
    return JobEventView(job_id=job_id, state=job.state,
                        log_index=process_movement(session, rt, "job.committed", data, []).index)


# --- commit / reveal ---------------------------------------------------------------------------


def _lock_for_move(session: Session, rt: Runtime, assignment_id: int, who: str,
                   state: str) -> tuple[Job, Assignment]:
    unlocked = session.get(Assignment, assignment_id)
    if unlocked is None:
        raise NotFound(f"no assignment {assignment_id}")
    job = jobs_repository.lock_job(session, unlocked.job_id)
    assignment = repository.lock_assignment(session, assignment_id)
    if assignment.verifier != who:
        raise Forbidden("this assignment belongs to another verifier")
    if assignment.state != state:
        raise InvalidState(f"assignment is {assignment.state}, not {state}")
    if rt.clock.now() >= assignment.deadline:
        raise InvalidState("the deadline for this move has passed")
    return job, assignment


def process_refresh_segment(session: Session, rt: Runtime, job_id: str, segment: int) -> None:
    """Once no verifier of `segment` still owes a commit, the solver's reveal clock starts."""
    peers = [a for a in repository.get_job_assignments(session, job_id) if a.segment == segment]
    waiting = any(a.state in (WAIT_START, ASSIGNED) for a in peers)
    for a in peers:
        if a.state == COMMITTED:
            a.deadline = FAR_FUTURE if waiting else rt.clock.now() + rt.settings.move_timeout_s


def process_verification_commit(session: Session, rt: Runtime, who: str, assignment_id: int,
                                commit_hash: str) -> AssignmentView:
    job, assignment = _lock_for_move(session, rt, assignment_id, who, ASSIGNED)
    assignment.commit_hash, assignment.state = commit_hash, COMMITTED
    session.flush()
    process_refresh_segment(session, rt, job.job_id, assignment.segment)
    process_movement(session, rt, "verification.committed",
                     {"assignment": assignment.id, "job_id": job.job_id, "verifier": who,
                      "segment": assignment.segment, "commit_hash": commit_hash}, [])
    return get_assignment_view(assignment)


def process_verification_reveal(session: Session, rt: Runtime, who: str, assignment_id: int,
                                root: str, salt: str) -> AssignmentView:
    job, assignment = _lock_for_move(session, rt, assignment_id, who, REVEALABLE)
    if compute_verification_commit(bytes.fromhex(root), bytes.fromhex(salt)).hex() != assignment.commit_hash:
        raise InvalidInput("(root, salt) does not open the committed hash", "root")
    end = jobs_repository.get_checkpoint(session, job.job_id, assignment.segment + 1)
    assignment.claimed_root = root
    data = {"assignment": assignment.id, "job_id": job.job_id, "verifier": who,
            "segment": assignment.segment, "root": root, "salt": salt}
    if root == end.state_root:
        assignment.state = AGREED
        process_movement(session, rt, "verification.agreed", data, [])
    else:
        assignment.state = DISPUTED
        from coordinator.disputes.service import process_open_dispute  # disputes build on us

        dispute = process_open_dispute(session, rt, job, assignment, root)
        process_movement(session, rt, "dispute.opened", {**data, "dispute": dispute.id}, [])
    return get_assignment_view(assignment)


# --- conclusions -------------------------------------------------------------------------------


def get_paid_verifiers(assignments: list[Assignment]) -> list[str]:
    """Verifiers that did their work on this job and never lost or missed a move."""
    bad = {a.verifier for a in assignments if a.state in (TIMED_OUT, REJECTED)}
    good = {a.verifier for a in assignments if a.commit_hash is not None}
    return sorted(good - bad)


def process_solver_failure(session: Session, rt: Runtime, job: Job, reason: str,
                           victim: str | None = None) -> JobEventView:
    assignments = repository.get_job_assignments(session, job.job_id)
    for a in assignments:
        if a.state in ACTIVE:
            a.state = CANCELLED
    return process_solver_fault(session, rt, job, reason, victim, get_paid_verifiers(assignments))


def process_verifier_timeout(session: Session, rt: Runtime, job: Job, assignment: Assignment) -> None:
    """A verifier missed its move: it loses up to the fee it would have earned, and its slot.
    One that missed its commit is replaced while the segment's end is still secret."""
    missed = assignment.state
    assignment.state = TIMED_OUT
    amount = min(get_balance(session, stake(assignment.verifier)), job.verifier_fee)
    replacement = _add_replacement(session, rt, job, assignment) if missed == ASSIGNED else None
    session.flush()
    process_refresh_segment(session, rt, job.job_id, assignment.segment)
    process_movement(session, rt, "verification.timed_out",
                     {"assignment": assignment.id, "job_id": job.job_id, "verifier": assignment.verifier,
                      "slashed": amount, "replaced_by": replacement},
                     compute_slash_legs(stake(assignment.verifier), amount, job.submitter))


def _add_replacement(session: Session, rt: Runtime, job: Job, missed: Assignment) -> str | None:
    """Draw another verifier for the segment from the job's public seed and the missed
    assignment's id, so anyone can recompute it; none left → the segment keeps fewer checks.
    Only before checkpoint i+1 is public: after it, a newcomer could copy the solver's root."""
    taken = {a.verifier for a in repository.get_job_assignments(session, job.job_id)
             if a.segment == missed.segment}
    pool = [(key, w) for key, w in _eligible_verifiers(session, job) if key not in taken]
    seed = compute_replacement_seed(bytes.fromhex(job.selection_seed), missed.id)
    chosen = compute_verifier_choice(seed, pool, 1)
    if not chosen:
        return None
    session.add(Assignment(job_id=job.job_id, verifier=chosen[0], segment=missed.segment, state=ASSIGNED,
                           deadline=rt.clock.now() + rt.settings.move_timeout_s))
    return chosen[0]


def process_conclusion(session: Session, rt: Runtime, job: Job) -> bool:
    """Settle a verifying job whose challenge window has passed and which owes no move."""
    assignments = repository.get_job_assignments(session, job.job_id)
    if job.state != VERIFYING or job.deadline > rt.clock.now():
        return False
    if any(a.state in ACTIVE for a in assignments):
        job.deadline = rt.clock.now() + rt.settings.sweep_interval_s  # look again next sweep
        return False
    process_settlement(session, rt, job, get_paid_verifiers(assignments))
    return True


def get_assignment_view(a: Assignment) -> AssignmentView:
    return AssignmentView(id=a.id, job_id=a.job_id, verifier=a.verifier, segment=a.segment,
                          state=a.state, deadline=a.deadline, claimed_root=a.claimed_root)
