"""Dispute rulings. The referee recomputes the disputed segment and compares both claims:
- matches the solver's root: the verifier was wrong — its standing stake (up to the solver's
  stake on the job) is slashed, half to the solver; its assignment is rejected;
- matches the verifier's root: the solver was wrong — the job fails and the solver's stake is
  slashed, half to the verifier;
- matches neither: both are slashed, all of it burned.
Until protocol.dispute's bisection game is wired in, the whole segment is replayed (bounded by
the job's checkpoint interval); the ruling logic stays the same once the game narrows it to one
step.
"""

import json

from sqlalchemy.orm import Session

from coordinator.datasets.service import get_job_dataset
from coordinator.disputes import repository
from coordinator.disputes.referee import compute_segment_root
from coordinator.disputes.schemas import DisputeView
from coordinator.errors import InvalidState
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.checkpoints import get_checkpoint_bytes, get_checkpoint_row
from coordinator.jobs.payouts import compute_slash_legs
from coordinator.ledger.accounts import BURN_ACCOUNT, stake
from coordinator.ledger.service import get_balance, process_movement
from coordinator.models import Dispute
from coordinator.runtime import Runtime
from coordinator.verification import repository as verification_repository
from coordinator.verification.service import REJECTED, UPHELD, process_solver_failure
from protocol.spec import parse_job_spec


def get_referee_input(session: Session, dispute_id: int) -> dict:
    dispute = repository.get_dispute(session, dispute_id)
    if dispute.status != "open":
        raise InvalidState(f"dispute {dispute_id} is already {dispute.status}")
    job = jobs_repository.get_job(session, dispute.job_id)
    state = json.loads(dispute.state_json)
    start = get_checkpoint_row(session, job.job_id, state["segment"])
    end = get_checkpoint_row(session, job.job_id, state["segment"] + 1)
    spec_json = json.loads(job.spec_json)
    return {"spec_json": spec_json, "dataset": get_job_dataset(session, parse_job_spec(spec_json)),
            "start_bytes": get_checkpoint_bytes(session, job.job_id, state["segment"]),
            "start_root": start.state_root, "start_step": start.step, "to_step": end.step}


def compute_referee_root(rt: Runtime, referee_input: dict) -> str:
    spec = parse_job_spec(referee_input["spec_json"])
    return compute_segment_root(referee_input["spec_json"], spec, referee_input["dataset"],
                                referee_input["start_bytes"], referee_input["start_root"],
                                referee_input["to_step"],
                                referee_input["start_step"], rt.settings.referee_timeout_s)


def process_ruling(session: Session, rt: Runtime, dispute_id: int, referee_root: str) -> DisputeView:
    dispute = repository.get_dispute(session, dispute_id)
    job = jobs_repository.lock_job(session, dispute.job_id)
    dispute = repository.lock_dispute(session, dispute_id)
    if dispute.status != "open":  # ruled meanwhile by a concurrent caller: never rule twice
        return get_dispute_view(dispute)
    state = json.loads(dispute.state_json)
    assignment = verification_repository.lock_assignment(session, dispute.assignment_id)
    solver_right = referee_root == state["solver_root"]
    verifier_right = referee_root == state["verifier_root"]
    dispute.winner = "solver" if solver_right else "verifier" if verifier_right else "neither"
    dispute.status = "ruled"
    state["referee_root"] = referee_root
    dispute.state_json = json.dumps(state, sort_keys=True)
    data = {"dispute": dispute.id, "job_id": job.job_id, "winner": dispute.winner,
            "referee_root": referee_root}
    assignment.state = UPHELD if verifier_right else REJECTED
    if not solver_right:
        victim = assignment.verifier if verifier_right else None
        process_solver_failure(session, rt, job, "solver_caught_by_referee", victim)
    if not verifier_right:
        _slash_verifier(session, rt, job, assignment.verifier, job.solver if solver_right else None)
    process_movement(session, rt, "dispute.ruled", data, [])
    return get_dispute_view(dispute)


def _slash_verifier(session: Session, rt: Runtime, job, verifier: str, victim: str | None) -> None:
    amount = min(get_balance(session, stake(verifier)), max(job.stake or 0, job.min_stake))
    legs = compute_slash_legs(stake(verifier), amount, victim) if victim else \
        [(stake(verifier), -amount), (BURN_ACCOUNT, amount)]
    process_movement(session, rt, "verifier.slashed",
                     {"verifier": verifier, "job_id": job.job_id, "slashed": amount}, legs)


def process_rule_dispute(rt: Runtime, dispute_id: int) -> DisputeView:
    """Compute outside any transaction (seconds of training), then rule inside one. Idempotent:
    asking again (a client retry, the sweeper racing a request) returns the ruling made."""
    with rt.db.read() as session:
        dispute = repository.get_dispute(session, dispute_id)
        if dispute.status != "open":
            return get_dispute_view(dispute)
        referee_input = get_referee_input(session, dispute_id)
    root = compute_referee_root(rt, referee_input)
    return rt.db.write(lambda s: process_ruling(s, rt, dispute_id, root))


def get_dispute_view(dispute: Dispute) -> DisputeView:
    return DisputeView(id=dispute.id, job_id=dispute.job_id, assignment_id=dispute.assignment_id,
                       status=dispute.status, winner=dispute.winner, state=json.loads(dispute.state_json))
