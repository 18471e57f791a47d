"""The job market: submit, bid, award, heartbeat, commit, settle, and the solver's deadlines.

Award rule: when bidding closes, among bids whose profile equals the job's and whose stake is at
least `min_stake`, the lowest price wins; ties go to the earliest bid. Losing stakes are released
in the same transaction. Every transition locks the job row first (then ledger rows, then the
log), so two concurrent awards serialise and the second sees the job already awarded.
"""

import hashlib
import hmac
import json
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from coordinator.clock import FAR_FUTURE
from coordinator.datasets.service import check_job_files_available, get_job_files
from coordinator.errors import AlreadyExists, Forbidden, InvalidState, QuotaExceeded
from coordinator.jobs import repository
from coordinator.jobs.checkpoints import compute_spec_layout
from coordinator.jobs.schemas import BidRequest, BidView, JobEventView, JobView, SubmitJobRequest
from coordinator.ledger.accounts import available, escrow, stake
from coordinator.ledger.payouts import (
    compute_escrow_split,
    compute_slash_legs,
    compute_stake_release,
)
from coordinator.ledger.service import get_balance, process_movement, transfer
from coordinator.models import Bid, Job
from coordinator.runtime import Runtime
from protocol.assurance import (
    SamplingPlan,
    compute_default_verifier_fee,
    compute_min_solver_stake,
    compute_min_verifier_bond,
    compute_sampling_plan,
    describe_sampling,
)
from protocol.economics import compute_max_price
from protocol.errors import InvalidInput, ProfileMismatch
from protocol.sampling import compute_beacon_commitment
from protocol.spec import compute_checkpoint_steps, compute_job_id, parse_job_spec, spec_to_json
from protocol.state import compute_layout_bytes
from protocol.training import check_runnable_spec
from protocol.trajectory import Commitment
from protocol.wire import FINAL_JOB_STATES, BidStatus, JobState

BEACON_TAG = b"veritrain-selection-beacon-v1"


def get_event_view(job: Job, entry) -> JobEventView:
    return JobEventView(job_id=job.job_id, state=job.state, log_index=entry.index)


def process_submit(
    session: Session, rt: Runtime, submitter: str, req: SubmitJobRequest
) -> JobEventView:
    if req.bounty < rt.settings.min_bounty:
        raise InvalidInput(f"bounty must be at least {rt.settings.min_bounty}", "bounty")
    spec = parse_job_spec(req.spec)
    job_id = compute_job_id(spec).hex()
    if repository.is_existing_job(session, job_id):
        raise AlreadyExists(
            f"job {job_id} already exists (change the seed to post the same work twice)"
        )
    check_job_files_available(session, spec)
    layout = compute_spec_layout(rt, session, req.spec)  # what a solver would build
    state_bytes = compute_layout_bytes(layout)
    checkpoints = len(compute_checkpoint_steps(spec))
    req, plan = _with_sampling_plan(req, checkpoints - 1)
    if req.num_segments > checkpoints - 1:
        raise InvalidInput(f"the job has only {checkpoints - 1} segments", "num_segments")
    req = _with_checked_terms(req, rt, checkpoints - 1)
    bond = max(
        rt.settings.min_verifier_bond,
        compute_min_verifier_bond(req.verifier_fee, rt.settings.verifier_bond_multiple),
    )
    now = rt.clock.now()
    job = Job(
        job_id=job_id,
        submitter=submitter,
        spec_json=json.dumps(spec_to_json(spec), sort_keys=True),
        profile_label=spec.profile.label,
        bounty=req.bounty,
        min_stake=req.min_stake,
        verifier_fee=req.verifier_fee,
        verifier_bond=bond,
        forced_error_ppm=rt.settings.forced_error_ppm,
        num_verifiers=req.num_verifiers,
        num_segments=req.num_segments,
        num_checkpoints=checkpoints,
        state_bytes=state_bytes,
        state=JobState.BIDDING,
        created_at=now,
        bidding_deadline=now + max(req.bidding_s, rt.settings.min_bidding_s),
        deadline=now + max(req.bidding_s, rt.settings.min_bidding_s),
    )
    session.add(job)
    session.flush()
    data = {
        "job_id": job_id,
        "submitter": submitter,
        "bounty": req.bounty,
        "profile": job.profile_label,
        "min_stake": req.min_stake,
        "verifier_fee": req.verifier_fee,
        "verifier_bond": bond,
        "forced_error_ppm": rt.settings.forced_error_ppm,
        "num_verifiers": req.num_verifiers,
        "num_segments": req.num_segments,
        "num_checkpoints": checkpoints,
        "state_bytes": state_bytes,  # the draw passes over verifiers that take less
        **({"audits_final_segment": True} if spec.evaluation else {}),
        "bidding_deadline": job.bidding_deadline,
        # what the verification buys and costs, shown at submission (protocol.assurance)
        "assurance": plan.level,
        "single_step_survival": round(plan.single_step_survival, 6),
        "verification_fraction": round(plan.verification_fraction, 6),
    }
    entry = process_movement(
        session,
        rt,
        "job.submitted",
        data,
        transfer(available(submitter), escrow(job_id), req.bounty),
    )
    _check_open_jobs_quota(session, rt, submitter)  # after the log lock: submits serialise
    return get_event_view(job, entry)


def _with_sampling_plan(req: SubmitJobRequest, total: int) -> tuple[SubmitJobRequest, SamplingPlan]:
    """The request with its sampling counts derived from its assurance level or detection
    target, where it names one; and the plan those counts amount to."""
    if req.assurance is None and req.detection is None:
        return req, describe_sampling(total, req.num_segments, req.num_verifiers)
    plan = compute_sampling_plan(total, req.assurance, req.detection)
    counts = {"num_segments": plan.num_segments, "num_verifiers": plan.num_verifiers}
    return req.model_copy(update=counts), plan


def _with_checked_terms(req: SubmitJobRequest, rt: Runtime, total: int) -> SubmitJobRequest:
    """Fill in an omitted fee and minimum stake, and refuse terms that break the incentives:
    a verified job pays each verifier at least `min_verifier_fee`, leaves a price for the
    solver, and asks a stake that makes faking any share of the work lose money."""
    k, v, settings = req.num_segments, req.num_verifiers, rt.settings
    fee = req.verifier_fee
    if fee is None:
        fee = (
            compute_default_verifier_fee(req.bounty, k, total, v, settings.min_verifier_fee)
            if v
            else 0
        )
    if v and fee < settings.min_verifier_fee:
        raise InvalidInput(
            f"a verified job pays each verifier at least {settings.min_verifier_fee}",
            "verifier_fee",
        )
    max_price = compute_max_price(req.bounty, fee, v)
    if max_price < 1:
        raise InvalidInput("bounty must leave a price for the solver beyond the fees", "bounty")
    margin = Fraction(settings.stake_margin).limit_denominator(1000)
    required = compute_min_solver_stake(max_price, k, margin) if v else 0
    min_stake = required if req.min_stake is None else req.min_stake
    if min_stake < required:
        raise InvalidInput(
            f"min_stake must be at least {required}: the stake rule S ≥ {float(margin):.3g}·P/k "
            f"with P = {max_price} (the highest price a bid may ask) and k = {k} replayed "
            "segments, so faking any share of the work loses money",
            "min_stake",
        )
    return req.model_copy(update={"verifier_fee": fee, "min_stake": min_stake})


def _check_open_jobs_quota(session: Session, rt: Runtime, submitter: str) -> None:
    quota = rt.settings.max_open_jobs_per_key
    if repository.count_open_jobs(session, submitter, FINAL_JOB_STATES) > quota:
        raise QuotaExceeded(f"a key may have at most {quota} open jobs; wait for one to finish")


def process_bid(
    session: Session, rt: Runtime, bidder: str, job_id: str, req: BidRequest
) -> JobEventView:
    job = repository.lock_job(session, job_id)
    if job.state != JobState.BIDDING or rt.clock.now() >= job.bidding_deadline:
        raise InvalidState("bidding on this job is closed")
    if bidder == job.submitter:
        raise Forbidden("a submitter cannot bid on its own job")
    if req.profile != job.profile_label:
        raise ProfileMismatch(f"job needs profile {job.profile_label}, bid offers {req.profile}")
    if req.stake < job.min_stake:
        raise InvalidInput(f"stake must be at least {job.min_stake}", "stake")
    max_price = compute_max_price(job.bounty, job.verifier_fee, job.num_verifiers)
    if req.price > max_price:
        raise InvalidInput(f"price must not exceed {max_price}", "price")
    if repository.get_bid(session, job_id, bidder) is not None:
        raise AlreadyExists("this account already bid on this job")
    session.add(
        Bid(
            job_id=job_id,
            bidder=bidder,
            price=req.price,
            stake=req.stake,
            profile_label=req.profile,
            created_at=rt.clock.now(),
        )
    )
    session.flush()
    entry = process_movement(
        session,
        rt,
        "job.bid",
        {"job_id": job_id, "bidder": bidder, "price": req.price, "stake": req.stake},
        transfer(available(bidder), stake(bidder, job_id), req.stake),
    )
    return get_event_view(job, entry)


def compute_winner(bids: list[Bid]) -> Bid | None:
    """Lowest price; ties by earliest bid (lowest id)."""
    return min(bids, key=lambda b: (b.price, b.id), default=None)


def process_award(session: Session, rt: Runtime, job_id: str) -> JobEventView:
    job = repository.lock_job(session, job_id)
    if job.state != JobState.BIDDING:
        raise InvalidState(f"job is {job.state}, not bidding")
    now = rt.clock.now()
    if now < job.bidding_deadline:
        raise InvalidState("bidding is still open")
    bids = repository.get_bids(session, job_id)
    winner = compute_winner(bids)
    legs = []
    for bid in bids:
        bid.status = BidStatus.WON if bid is winner else BidStatus.LOST
        if bid is not winner:
            legs += compute_stake_release(bid.bidder, job_id, bid.stake)
    if winner is None:
        job.state, job.outcome, job.deadline = JobState.CANCELLED, "no_bids", FAR_FUTURE
        legs += compute_escrow_split(job_id, job.bounty, job.submitter, [])
        entry = process_movement(
            session, rt, "job.cancelled", {"job_id": job_id, "reason": "no_bids"}, legs
        )
        return get_event_view(job, entry)
    job.state, job.solver, job.price, job.stake = (
        JobState.AWARDED,
        winner.bidder,
        winner.price,
        winner.stake,
    )
    job.heartbeat_at = now
    job.commit_deadline = now + rt.settings.commit_timeout_s
    job.deadline = min(job.commit_deadline, now + rt.settings.heartbeat_timeout_s)
    data = {
        "job_id": job_id,
        "solver": winner.bidder,
        "price": winner.price,
        "stake": winner.stake,
        "bids": len(bids),
        "commit_deadline": job.commit_deadline,
        "beacon_commitment": compute_beacon_commitment(compute_job_beacon(rt, job_id)).hex(),
    }
    return get_event_view(job, process_movement(session, rt, "job.awarded", data, legs))


def compute_job_beacon(rt: Runtime, job_id: str) -> bytes:
    """The job's selection beacon: a secret only the coordinator can compute (keyed by its log
    key), fixed by the job id, so nothing is stored and nothing can be chosen after the award.
    The award publishes its hash; the commitment's log entry reveals it."""
    message = BEACON_TAG + bytes.fromhex(job_id)
    return hmac.new(bytes(rt.key), message, hashlib.sha256).digest()


def require_solver(job: Job, who: str, state: JobState, now: float | None = None) -> None:
    """The caller is the solver, the job is in `state` and (given `now`) its deadline is ahead."""
    if job.solver != who:
        raise Forbidden("only the job's solver may do this")
    if job.state != state:
        raise InvalidState(f"job is {job.state}, not {state}")
    if now is not None and now >= job.deadline:
        raise InvalidState("the deadline for this move has passed")


def process_verifying(
    job: Job, commitment: Commitment, signature: bytes, seed: bytes, deadline: float
) -> None:
    """The solver's commitment is recorded: the job waits for its verifiers until `deadline`."""
    job.state, job.deadline = JobState.VERIFYING, deadline
    job.trajectory_root = commitment.trajectory_root.hex()
    job.final_model_root = commitment.final_model_root.hex()
    job.commitment_signature, job.selection_seed = signature.hex(), seed.hex()


def process_heartbeat(session: Session, rt: Runtime, solver: str, job_id: str) -> JobEventView:
    job = repository.lock_job(session, job_id)
    now = rt.clock.now()
    require_solver(job, solver, JobState.AWARDED, now)
    job.heartbeat_at = now
    job.deadline = min(job.commit_deadline or now, now + rt.settings.heartbeat_timeout_s)
    return get_event_view(
        job, process_movement(session, rt, "job.heartbeat", {"job_id": job_id}, [])
    )


def process_solver_fault(
    session: Session,
    rt: Runtime,
    job: Job,
    reason: str,
    victim: str | None,
    paid_verifiers: list[str],
) -> JobEventView:
    """Slash the solver's stake, pay verifiers that worked, refund the submitter; job fails."""
    legs = compute_slash_legs(
        stake(job.solver, job.job_id), job.stake or 0, victim or job.submitter
    )
    legs += compute_escrow_split(
        job.job_id,
        get_balance(session, escrow(job.job_id)),
        job.submitter,
        [(v, job.verifier_fee) for v in paid_verifiers],
    )
    job.state, job.outcome, job.deadline = JobState.FAILED, reason, FAR_FUTURE
    data = {"job_id": job.job_id, "solver": job.solver, "reason": reason, "slashed": job.stake}
    return get_event_view(job, process_movement(session, rt, "job.solver_slashed", data, legs))


def process_refund(
    session: Session, rt: Runtime, job: Job, reason: str, **details: str
) -> JobEventView:
    """The job fails and the solver is not at fault: its stake goes back and the submitter gets
    its escrow back in full (the legs of a cancelled award; no new money rule)."""
    legs = compute_escrow_split(
        job.job_id, get_balance(session, escrow(job.job_id)), job.submitter, []
    )
    legs += compute_stake_release(job.solver, job.job_id, job.stake or 0)
    job.state, job.outcome, job.deadline = JobState.FAILED, reason, FAR_FUTURE
    data = {"job_id": job.job_id, "solver": job.solver, "reason": reason, **details}
    return get_event_view(job, process_movement(session, rt, "job.refunded", data, legs))


def get_spec_fault(rt: Runtime, session: Session, job: Job) -> str | None:
    """Why no honest party can run this job's spec here (the submission validator's message),
    or None. Submission refuses such specs; one can still be running if it was stored before
    the validator grew stricter."""
    try:
        spec = parse_job_spec(json.loads(job.spec_json))
        check_runnable_spec(spec, get_job_files(rt, session, spec))
    except (InvalidInput, ValueError) as err:  # InvalidSpec, or a stored spec that is not JSON
        return str(err) or type(err).__name__
    return None


def process_settlement(
    session: Session, rt: Runtime, job: Job, paid_verifiers: list[str]
) -> JobEventView:
    legs = compute_escrow_split(
        job.job_id,
        get_balance(session, escrow(job.job_id)),
        job.submitter,
        [(job.solver, job.price or 0)] + [(v, job.verifier_fee) for v in paid_verifiers],
    )
    legs += compute_stake_release(job.solver, job.job_id, job.stake or 0)
    job.state, job.outcome, job.deadline = JobState.SETTLED, "accepted", FAR_FUTURE
    data = {
        "job_id": job.job_id,
        "solver": job.solver,
        "price": job.price,
        "verifiers": paid_verifiers,
    }
    return get_event_view(job, process_movement(session, rt, "job.settled", data, legs))


def get_stored_spec(spec_json: str) -> dict[str, Any]:
    """The spec as stored, for reading back: never re-validated (a job stored under older rules
    still reads), and never a 500 when the stored text is not a JSON object (answered as
    `{"unparsed": text}`) or holds a non-finite number (answered as null, as JSON has no NaN)."""
    try:
        spec = json.loads(spec_json, parse_constant=lambda _constant: None)
    except ValueError:
        return {"unparsed": spec_json}
    return spec if isinstance(spec, dict) else {"unparsed": spec_json}


def get_job_view(job: Job, bids: list[Bid] | None = None, with_spec: bool = False) -> JobView:
    return JobView(
        id=job.id,
        job_id=job.job_id,
        submitter=job.submitter,
        state=job.state,
        profile=job.profile_label,
        bounty=job.bounty,
        min_stake=job.min_stake,
        verifier_fee=job.verifier_fee,
        verifier_bond=job.verifier_bond or 0,
        num_verifiers=job.num_verifiers,
        num_segments=job.num_segments,
        num_checkpoints=job.num_checkpoints,
        created_at=job.created_at,
        deadline=job.deadline,
        solver=job.solver,
        price=job.price,
        stake=job.stake,
        trajectory_root=job.trajectory_root,
        final_model_root=job.final_model_root,
        outcome=job.outcome,
        spec=get_stored_spec(job.spec_json) if with_spec else None,
        bids=[
            BidView(
                bidder=b.bidder,
                price=b.price,
                stake=b.stake,
                profile=b.profile_label,
                status=b.status,
            )
            for b in bids
        ]
        if bids is not None
        else None,
    )
