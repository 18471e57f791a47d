"""Transitions that cross slices: the one module that jobs, verification and disputes meet in.

The slices never import this module back (a test fails on any import circle in coordinator/):
each slice changes its own rows and returns what happened; here those steps are composed, in
the lock order job → assignments → ledger → log, inside the caller's transaction.
"""

import logging

from sqlalchemy.orm import Session

from coordinator.disputes import repository as disputes_repository
from coordinator.disputes import service as disputes
from coordinator.disputes.schemas import DisputeView
from coordinator.errors import InvalidState
from coordinator.jobs import checkpoints
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs import service as jobs
from coordinator.jobs.schemas import CheckpointView, CommitmentRequest, JobEventView
from coordinator.ledger.service import process_movement
from coordinator.metrics import observe_ruling, start_timer
from coordinator.models import Assignment, Dispute, Job
from coordinator.runtime import Runtime
from coordinator.verification import repository as verification_repository
from coordinator.verification import service as verification
from coordinator.verification.schemas import AssignmentView
from protocol.dispute import OVER, REFEREE_FAULT, SOLVER, STATE_FAULT, VERIFIER, Game
from protocol.errors import UnsteppableState
from protocol.sampling import compute_selection_seed
from protocol.trajectory import Commitment
from protocol.wire import SOLVER_OWES, VERIFIER_OWES, AssignmentState, JobState

log = logging.getLogger("veritrain.coordinator.transitions")

# --- the solver commits; verifiers are drawn -------------------------------------------------------


def process_commitment(
    session: Session, rt: Runtime, solver: str, job_id: str, req: CommitmentRequest
) -> JobEventView:
    job = jobs_repository.lock_job(session, job_id)
    jobs.require_solver(job, solver, JobState.AWARDED, rt.clock.now())
    commitment, signature = verification.compute_checked_commitment(job, solver, req)
    job.reported_losses = req.reported_losses_json()  # reported, unverified, not signed
    initial_root = checkpoints.get_initial_root(rt, session, job)
    claimed_root, proof = (
        bytes.fromhex(req.initial_state_root),
        [bytes.fromhex(h) for h in req.initial_proof],
    )
    if checkpoints.is_planted_initial_state(job, commitment, claimed_root, proof, initial_root):
        return _process_planted_initial_state(
            session, rt, job, commitment, signature, req, initial_root
        )
    # The seed: the beacon fixed at the award (only its hash was public) and the commitment's
    # canonical bytes — nothing the solver could vary for free or know in advance.
    beacon = jobs.compute_job_beacon(rt, job_id)
    seed = compute_selection_seed(beacon, commitment.encode())
    verifiers, segments = verification.process_draw_assignments(session, rt, job, seed)
    jobs.process_verifying(
        job, commitment, signature, seed, rt.clock.now() + rt.settings.challenge_window_s
    )
    data = {
        **commitment.to_json(),
        "signature": signature.hex(),
        "initial_state_root": initial_root.hex(),
        "beacon": beacon.hex(),
        "seed": seed.hex(),
        "verifiers": verifiers,
        "segments": segments,
    }
    return jobs.get_event_view(job, process_movement(session, rt, "job.committed", data, []))


def _process_planted_initial_state(
    session: Session,
    rt: Runtime,
    job: Job,
    commitment: Commitment,
    signature: bytes,
    req: CommitmentRequest,
    initial_root: bytes,
) -> JobEventView:
    """The solver signed a trajectory whose checkpoint 0 is not the spec's initial state: the
    signed commitment and the leaf-0 proof are the whole evidence (logged), no game needed."""
    evidence = {
        **commitment.to_json(),
        "signature": signature.hex(),
        "initial_state_root": req.initial_state_root,
        "initial_proof": req.initial_proof,
        "expected_initial_state_root": initial_root.hex(),
    }
    process_movement(session, rt, "job.planted_initial_state", evidence, [])
    return process_solver_failure(session, rt, job, "planted_initial_state")


def process_checkpoint_upload(
    session: Session,
    rt: Runtime,
    who: str,
    job_id: str,
    index: int,
    ckpt: checkpoints.DecodedCheckpoint,
    proof: list[bytes],
) -> CheckpointView:
    job, existing = checkpoints.lock_upload_target(session, who, job_id, index, ckpt, proof)
    if existing is not None:
        return checkpoints.get_checkpoint_view(existing, ckpt.size)
    assignments = verification.check_checkpoint_wanted(session, job, index)
    row = checkpoints.process_store_checkpoint(session, job_id, index, ckpt, rt.clock.now())
    verification.process_checkpoint_published(rt, assignments, index)
    process_movement(
        session,
        rt,
        "checkpoint.uploaded",
        {
            "job_id": job_id,
            "index": index,
            "step": ckpt.step,
            "state_root": ckpt.state_root.hex(),
            "sha256": ckpt.sha256,
        },
        [],
    )
    return checkpoints.get_checkpoint_view(row, ckpt.size)


# --- a verifier reveals; a disagreement opens a dispute ---------------------------------------------


def process_verification_reveal(
    session: Session, rt: Runtime, who: str, assignment_id: int, root: str, salt: str
) -> AssignmentView:
    job, assignment, data = verification.process_verification_reveal(
        session, rt, who, assignment_id, root, salt
    )
    if assignment.state == AssignmentState.DISPUTED:
        dispute = disputes.process_open_dispute(session, rt, job, assignment, root)
        process_movement(session, rt, "dispute.opened", {**data, "dispute": dispute.id}, [])
    return verification.get_assignment_view(assignment)


# --- disputes end ----------------------------------------------------------------------------------


def process_dispute_move(
    session: Session, rt: Runtime, who: str, dispute_id: int, move_json: dict
) -> DisputeView:
    job, dispute, game = disputes.process_dispute_move(session, rt, who, dispute_id, move_json)
    process_game_over(session, rt, job, dispute, game)
    return disputes.get_dispute_view(dispute)


def process_dispute_deadline(session: Session, rt: Runtime, dispute_id: int) -> bool:
    over = disputes.process_dispute_deadline(session, rt, dispute_id)
    if over is not None:
        process_game_over(session, rt, *over)
    return over is not None


def process_rule_dispute(rt: Runtime, dispute_id: int, wait: bool = True) -> DisputeView:
    """Compute outside any transaction (one training step in a worker), then rule inside one.
    Idempotent: asking again returns the ruling made; before the ruling phase it changes nothing.
    A referee that fails is counted, never a 500: a state it cannot step is the solver's fault,
    anything else the referee's own; after `referee_attempts` failures the game ends by
    `protocol.dispute.RULING_FAILURE`. One replica at a time holds the ruling's claim; a caller
    that finds it held waits for that ruling (`wait`) or returns the dispute as it stands."""
    with disputes.claim_ruling(rt, dispute_id, wait) as claimed:
        if claimed:
            _rule_if_owed(rt, dispute_id)
    with rt.db.read() as session:
        return disputes.get_dispute_view(disputes_repository.get_dispute(session, dispute_id))


def _rule_if_owed(rt: Runtime, dispute_id: int) -> None:
    with rt.db.read() as session:
        task = disputes.get_referee_task(rt, session, dispute_id)
    if task is not None:
        started = start_timer()
        try:
            chunk_hash = disputes.run_referee(rt, task)
        except Exception as err:  # a worker crash or a bug of ours must not stall the dispute
            fault = STATE_FAULT if isinstance(err, UnsteppableState) else REFEREE_FAULT
            log.warning("referee failed on dispute %s (%s): %s", dispute_id, fault, err)
            message = f"{type(err).__name__}: {err}"
            rt.db.write(lambda s: _process_referee_failure(s, rt, dispute_id, fault, message))
        else:
            rt.db.write(lambda s: _process_ruling(s, rt, dispute_id, chunk_hash))
        observe_ruling(rt, started)


def _process_referee_failure(
    session: Session, rt: Runtime, dispute_id: int, fault: str, message: str
) -> None:
    failed = disputes.process_referee_failure(session, rt, dispute_id, fault, message)
    if failed is not None:
        process_game_over(session, rt, *failed)


def _process_ruling(session: Session, rt: Runtime, dispute_id: int, chunk_hash: bytes) -> None:
    ruled = disputes.process_referee_result(session, dispute_id, chunk_hash)
    if ruled is not None:
        process_game_over(session, rt, *ruled)


def process_game_over(
    session: Session, rt: Runtime, job: Job, dispute: Dispute, game: Game
) -> None:
    """The loser pays: a caught solver fails the job, a wrong challenger is slashed (both, when
    the referee reproduced neither claim)."""
    if game.phase != OVER:
        return
    assignment = verification_repository.lock_assignment(session, dispute.assignment_id)
    disputes.process_dispute_ruled(dispute, game)
    if game.extra.get("no_fault"):  # the referee failed: nobody is slashed, the job ends
        assignment.state = AssignmentState.CANCELLED
        if job.state not in (JobState.FAILED, JobState.SETTLED, JobState.CANCELLED):
            process_no_fault_end(session, rt, job, "referee_failed")
    else:
        _process_verdict(session, rt, job, assignment, game)
    view = disputes.get_dispute_view(dispute)
    process_movement(
        session,
        rt,
        "dispute.ruled",
        {
            "dispute": dispute.id,
            "job_id": job.job_id,
            "winner": dispute.winner,
            "reason": game.reason,
            "step": view.dispute_step,
            "chunk": view.dispute_chunk,
            "moves": game.moves,
        },
        [],
    )


def _process_verdict(
    session: Session, rt: Runtime, job: Job, assignment: Assignment, game: Game
) -> None:
    assignment.state = (
        AssignmentState.UPHELD if game.winner == VERIFIER else AssignmentState.REJECTED
    )
    if game.winner != SOLVER and job.state not in (JobState.FAILED, JobState.SETTLED):
        reason = (
            "solver_caught_by_referee"
            if "referee_chunk_hash" in game.extra
            else "solver_unsteppable_state"
            if "ruling_failure" in game.extra
            else "solver_lost_dispute"
        )
        process_solver_failure(
            session, rt, job, reason, assignment.verifier if game.winner else None
        )
    if game.winner != VERIFIER:
        verification.process_verifier_slash(
            session, rt, job, assignment.verifier, job.solver if game.winner else None
        )


# --- jobs end --------------------------------------------------------------------------------------


def process_solver_failure(
    session: Session, rt: Runtime, job: Job, reason: str, victim: str | None = None
) -> JobEventView:
    """The solver is slashed (to `victim`, else the submitter); verifiers that worked are paid."""
    paid = verification.process_cancel_assignments(session, job)
    return jobs.process_solver_fault(session, rt, job, reason, victim, paid)


def process_no_fault_end(session: Session, rt: Runtime, job: Job, reason: str) -> None:
    """Nobody is at fault (the referee could not rule): every move still due is void and the
    job is refunded."""
    verification.process_cancel_assignments(session, job)
    jobs.process_refund(session, rt, job, reason)


def process_spec_fault(session: Session, rt: Runtime, job: Job, fault: str) -> JobEventView:
    """The spec cannot be run by anyone: the submitter's fault, provable by rerunning the
    validator. Nobody who took the job pays for it: moves due are void, the solver's stake goes
    back and the submitter gets its escrow back (the legs of a no-fault end)."""
    verification.process_cancel_assignments(session, job)
    return jobs.process_refund(
        session, rt, job, "invalid_spec", fault="submitter", detail=fault[:512]
    )


def process_invalid_spec_claim(
    session: Session, rt: Runtime, solver: str, job_id: str
) -> JobEventView:
    """The solver reports that the job it won cannot be run; the coordinator checks the claim
    itself, so only a true claim ends the job."""
    job = jobs_repository.lock_job(session, job_id)
    jobs.require_solver(job, solver, JobState.AWARDED)
    fault = jobs.get_spec_fault(rt, session, job)
    if fault is None:
        raise InvalidState("this job's spec builds and runs here: train it or miss its deadline")
    return process_spec_fault(session, rt, job, fault)


def process_conclusion(session: Session, rt: Runtime, job: Job) -> bool:
    """Settle a verifying job whose challenge window has passed and which owes no move."""
    if job.state != JobState.VERIFYING or job.deadline > rt.clock.now():
        return False
    if verification.is_job_owing_moves(session, job):
        # look again next sweep; never further ahead, which keeps the challenge window shut
        # (`verification.process_challenge` closes it one sweep interval before the deadline)
        job.deadline = rt.clock.now() + rt.settings.sweep_interval_s
        return False
    jobs.process_settlement(session, rt, job, verification.get_job_paid_verifiers(session, job))
    return True


# --- overdue moves (the sweeper) ---------------------------------------------------------------------


def _is_due(deadline: float, rt: Runtime) -> bool:
    return deadline <= rt.clock.now()


def process_overdue_bidding(session: Session, rt: Runtime, job_id: str) -> bool:
    job = jobs_repository.lock_job(session, job_id)
    if job.state != JobState.BIDDING or not _is_due(job.deadline, rt):
        return False
    jobs.process_award(session, rt, job_id)
    return True


def process_overdue_awarded(session: Session, rt: Runtime, job_id: str) -> bool:
    job = jobs_repository.lock_job(session, job_id)
    if job.state != JobState.AWARDED or not _is_due(job.deadline, rt):
        return False
    fault = jobs.get_spec_fault(rt, session, job)
    if fault is not None:  # it could not be run: the late solver is not to blame
        process_spec_fault(session, rt, job, fault)
        return True
    late_commit = job.commit_deadline is not None and _is_due(job.commit_deadline, rt)
    process_solver_failure(
        session, rt, job, "solver_missed_commit" if late_commit else "solver_missed_heartbeat"
    )
    return True


def process_overdue_verifying(session: Session, rt: Runtime, job_id: str) -> bool:
    return process_conclusion(session, rt, jobs_repository.lock_job(session, job_id))


def process_overdue_assignment(session: Session, rt: Runtime, assignment_id: int) -> bool:
    job = jobs_repository.lock_job(session, session.get(Assignment, assignment_id).job_id)
    assignment = verification_repository.lock_assignment(session, assignment_id)
    if not _is_due(assignment.deadline, rt) or assignment.state not in SOLVER_OWES | VERIFIER_OWES:
        return False
    if job.state != JobState.VERIFYING:
        assignment.state = AssignmentState.CANCELLED
    elif (fault := jobs.get_spec_fault(rt, session, job)) is not None:
        process_spec_fault(session, rt, job, fault)  # a verifier cannot replay it either
    elif assignment.state in SOLVER_OWES:
        process_solver_failure(session, rt, job, f"solver_missed_move_{assignment.state}")
    else:
        verification.process_verifier_timeout(session, rt, job, assignment)
    return True
