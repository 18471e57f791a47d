"""Verifiers, their assignments and the commit/reveal of verification results.

Per assignment (verifier v replays segment i → i+1), whose move it is (`protocol.wire`):
    awaiting_start  solver must upload checkpoint i           (late: solver slashed)
    assigned        v must commit H(root ‖ salt)              (late: v times out, slashed)
    committed       solver must upload checkpoint i+1, which it may only do once every
                    verifier of segment i has committed       (late: solver slashed)
    revealable      v must reveal (root, salt)                (late: v times out, slashed)
    disputed                                                  (a game is under way)
    agreed | upheld | timed_out | rejected | cancelled        (no move due)
An assignment is drawn from the job's seed, or opened by a bonded verifier's own challenge
(`volunteer`, `process_challenge`): the same moves and deadlines, but never paid a fee, never
replaced, and ignored by the replacement draw (so `veritrain audit` recomputes draws unchanged).
A solver's move that is blocked by the previous segment's commits waits with it
(`_process_blocked_starts`): nobody is slashed for a move the protocol refuses.
Transitions that reach into jobs or disputes live in `coordinator.transitions`.
Lock order everywhere: job row, then assignment rows, then ledger rows, then the log.
"""

import json

from sqlalchemy.orm import Session

from coordinator.clock import FAR_FUTURE
from coordinator.errors import AlreadyExists, Forbidden, InvalidState, NotFound, QuotaExceeded
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.schemas import CommitmentRequest
from coordinator.ledger.accounts import BURN_ACCOUNT, available, stake
from coordinator.ledger.payouts import compute_slash_legs
from coordinator.ledger.service import get_balance, process_movement, transfer
from coordinator.models import Assignment, Job, Verifier
from coordinator.runtime import Runtime
from coordinator.verification import repository
from coordinator.verification.schemas import AssignmentView, RegisterVerifierRequest, VerifierView
from protocol.economics import (
    compute_false_challenge_penalty,
    compute_forced_error_jackpot,
    compute_verifier_timeout_penalty,
)
from protocol.errors import InvalidInput
from protocol.retention import OWES_COMMIT, compute_wanted_checkpoints
from protocol.sampling import (
    compute_eligible_verifiers,
    compute_forced_error_outcome,
    compute_planted_root,
    compute_replacement_seed,
    compute_secret_segment,
    compute_segment_choice,
    compute_verifier_choice,
    is_forced_error,
)
from protocol.trajectory import Commitment, is_valid_commitment_signature
from protocol.wire import (
    ACTIVE_ASSIGNMENT_STATES,
    AssignmentState,
    JobState,
    compute_verification_commit,
)

State = AssignmentState
ACTIVE = tuple(ACTIVE_ASSIGNMENT_STATES)


# --- verifiers ---------------------------------------------------------------------------------


def process_register_verifier(
    session: Session, rt: Runtime, who: str, req: RegisterVerifierRequest
) -> VerifierView:
    """Register (or update) the profiles a verifier can replay and add to its standing stake,
    which must reach the bond: a free registration would let anyone flood the draw."""
    profiles = sorted(set(req.profiles))
    if any(not p or len(p) > 128 for p in profiles):
        raise InvalidInput("profile labels must be 1-128 characters", "profiles")
    bond = rt.settings.min_verifier_bond
    if get_balance(session, stake(who)) + req.stake < bond:
        raise InvalidInput(f"standing stake must be at least {bond} after registering", "stake")
    verifier = repository.get_verifier(session, who)
    if verifier is None:
        verifier = Verifier(public_key=who, profiles="[]", registered_at=rt.clock.now())
        session.add(verifier)
    verifier.profiles = json.dumps(profiles)
    verifier.max_state_bytes = req.max_state_bytes
    session.flush()
    repository.set_verifier_profiles(session, who, profiles)
    session.flush()
    entry = process_movement(
        session,
        rt,
        "verifier.registered",
        {
            "verifier": who,
            "profiles": profiles,
            "max_state_bytes": req.max_state_bytes,
            "stake_added": req.stake,
        },
        transfer(available(who), stake(who), req.stake),
    )
    return VerifierView(
        public_key=who,
        profiles=profiles,
        stake=get_balance(session, stake(who)),
        log_index=entry.index,
        max_state_bytes=verifier.max_state_bytes,
    )


def process_withdraw_stake(session: Session, rt: Runtime, who: str, amount: int) -> VerifierView:
    """Return standing stake to the verifier's balance, never while it owes or awaits a move
    (an assignment or dispute in progress could still slash it), and never to below the bond
    unless all of it."""
    verifier = repository.get_verifier(session, who)
    if verifier is None:
        raise NotFound("not a registered verifier")
    if repository.is_verifier_busy(session, who, ACTIVE):
        raise InvalidState("finish your open assignments and disputes before withdrawing stake")
    left, bond = get_balance(session, stake(who)) - amount, rt.settings.min_verifier_bond
    if 0 < left < bond:  # else: register with the bond, withdraw all but 1, hold a slot for 1
        raise InvalidInput(f"leave a standing stake of 0 or at least {bond}", "amount")
    entry = process_movement(
        session,
        rt,
        "verifier.withdrew",
        {"verifier": who, "amount": amount},
        transfer(stake(who), available(who), amount),
    )
    return VerifierView(
        public_key=who,
        profiles=json.loads(verifier.profiles),
        stake=entry.balances[stake(who)],
        log_index=entry.index,
        max_state_bytes=verifier.max_state_bytes,
    )


def process_verifier_slash(
    session: Session, rt: Runtime, job: Job, verifier: str, victim: str | None
) -> None:
    """A verifier whose challenge lost (victim: the solver) or that agreed with neither claim
    (victim None: all burned)."""
    amount = compute_false_challenge_penalty(
        get_balance(session, stake(verifier)), job.stake or 0, job.min_stake
    )
    process_movement(
        session,
        rt,
        "verifier.slashed",
        {"verifier": verifier, "job_id": job.job_id, "slashed": amount},
        compute_slash_legs(stake(verifier), amount, victim),
    )


# --- commitment and selection ------------------------------------------------------------------


def compute_checked_commitment(
    job: Job, solver: str, req: CommitmentRequest
) -> tuple[Commitment, bytes]:
    commitment = Commitment.from_json(req.commitment)
    if commitment.job_id.hex() != job.job_id:
        raise InvalidInput("commitment is for another job", "commitment.job_id")
    if commitment.num_checkpoints != job.num_checkpoints:
        raise InvalidInput(
            f"this job has {job.num_checkpoints} checkpoints", "commitment.num_checkpoints"
        )
    signature = bytes.fromhex(req.signature)
    if not is_valid_commitment_signature(bytes.fromhex(solver), commitment, signature):
        raise InvalidInput("not the solver's signature over this commitment", "signature")
    return commitment, signature


def get_job_verifier_bond(rt: Runtime, job: Job) -> int:
    """The standing stake a verifier needs to be drawn for, or to challenge, this job: the bond
    the job fixed (and logged) at submission, so later settings never change who was eligible;
    a job from before bonds were fixed falls back to the registration bond."""
    return job.verifier_bond or rt.settings.min_verifier_bond


def _eligible_verifiers(session: Session, rt: Runtime, job: Job) -> list[tuple[str, int]]:
    """The draw's (key, weight) pool: only verifiers of the job's profile are read, in key order,
    so its cost does not grow with verifiers registered for other profiles; each must hold the
    job's bond and take its state size (a submitter cannot get a verifier penalised by posting
    a job beyond the memory it declared)."""
    rows = repository.get_profile_verifier_stakes(session, job.profile_label)
    candidates = [(key, balance, (job.profile_label,)) for key, balance, _ in rows]
    return compute_eligible_verifiers(
        candidates,
        job.profile_label,
        (job.solver, job.submitter),
        get_job_verifier_bond(rt, job),
        job.state_bytes or 0,
        {key: most for key, _, most in rows},
    )


def audits_final_segment(job: Job) -> bool:
    """Its final state carries evaluation metrics (`spec.evaluation`): the last segment is
    always among those replayed (`compute_segment_choice`)."""
    return json.loads(job.spec_json).get("evaluation") is not None


def process_draw_assignments(
    session: Session, rt: Runtime, job: Job, seed: bytes
) -> tuple[list[str], list[int]]:
    """Draw the job's verifiers and segments from the public seed; (verifiers, segments)."""
    verifiers = compute_verifier_choice(
        seed, _eligible_verifiers(session, rt, job), job.num_verifiers
    )
    segments = compute_segment_choice(
        seed, job.num_checkpoints - 1, job.num_segments, audits_final_segment(job)
    )
    deadline = rt.clock.now() + rt.settings.move_timeout_s
    for verifier in verifiers:
        for segment in segments:
            session.add(
                Assignment(
                    job_id=job.job_id,
                    verifier=verifier,
                    segment=segment,
                    state=State.AWAITING_START,
                    deadline=deadline,
                )
            )
    return verifiers, segments


# --- the open challenge window ------------------------------------------------------------------


def process_challenge(
    session: Session, rt: Runtime, who: str, job_id: str, segment: int
) -> AssignmentView:
    """A bonded verifier of the job's profile opens a volunteer assignment on `segment` while the
    job is verifying and its challenge window is open. The window closes one sweep interval
    before `job.deadline`: once the window has passed, `process_conclusion` only ever defers the
    deadline to one sweep interval after a moment already past, so a job waiting for its last
    moves never reopens to new challenges (they cannot chain a settlement off forever)."""
    job = jobs_repository.lock_job(session, job_id)
    now = rt.clock.now()
    if job.state != JobState.VERIFYING:
        raise InvalidState(f"job is {job.state}: segments may be challenged only while verifying")
    if now + rt.settings.sweep_interval_s >= job.deadline:
        raise InvalidState("the job's challenge window has closed")
    if who in (job.solver, job.submitter):
        raise Forbidden("the job's solver and submitter may not challenge it")
    verifier = repository.get_verifier(session, who)
    if verifier is None or job.profile_label not in json.loads(verifier.profiles):
        raise Forbidden(f"register as a verifier for profile {job.profile_label} to challenge")
    bond = get_job_verifier_bond(rt, job)
    if get_balance(session, stake(who)) < bond:
        raise Forbidden(f"a challenger of this job must hold a standing stake of at least {bond}")
    if not 0 <= segment <= job.num_checkpoints - 2:
        raise InvalidInput(f"segment must be in [0, {job.num_checkpoints - 2}]", "segment")
    assignments = repository.get_job_assignments(session, job.job_id)
    if any(a.verifier == who and a.segment == segment for a in assignments):
        raise AlreadyExists(f"you already hold an assignment on segment {segment}")
    limit = rt.settings.max_challenges_per_job
    if sum(a.volunteer for a in assignments) >= limit:
        raise QuotaExceeded(f"this job already holds {limit} challenges, the most it may")
    start_public = jobs_repository.get_checkpoint(session, job.job_id, segment) is not None
    assignment = Assignment(
        job_id=job.job_id,
        verifier=who,
        segment=segment,
        state=State.ASSIGNED if start_public else State.AWAITING_START,
        deadline=now + rt.settings.move_timeout_s,
        volunteer=True,
    )
    session.add(assignment)
    session.flush()
    process_refresh_segment(session, rt, job.job_id, segment)
    process_movement(
        session,
        rt,
        "verification.challenged",
        {"assignment": assignment.id, "job_id": job.job_id, "verifier": who, "segment": segment},
        [],
    )
    return get_assignment_view(assignment)


# --- checkpoints reach the assignments -----------------------------------------------------------


def check_checkpoint_wanted(session: Session, job: Job, index: int) -> list[Assignment]:
    """Checkpoint `index` is uploaded only when someone needs it (`protocol.retention`); as the
    end of segment index-1 it stays secret until that segment's verifiers have all committed.
    Returns the job's assignments."""
    assignments = repository.get_job_assignments(session, job.job_id)
    if any(a.segment == index - 1 and a.state in OWES_COMMIT for a in assignments):
        raise InvalidState(f"verifiers of segment {index - 1} have not committed yet")
    wanted = compute_wanted_checkpoints(
        job.num_checkpoints, [(a.segment, a.state) for a in assignments]
    )
    if index not in wanted:
        raise InvalidState(
            f"checkpoint {index} is not asked for (wanted now: {sorted(wanted)}); keep it until "
            "the job is final"
        )
    return assignments


def process_checkpoint_published(rt: Runtime, assignments: list[Assignment], index: int) -> None:
    """Checkpoint `index` starts segment index (its verifiers may replay) and ends segment
    index-1 (its verifiers may reveal)."""
    deadline = rt.clock.now() + rt.settings.move_timeout_s
    for a in assignments:
        if a.segment == index and a.state == State.AWAITING_START:
            a.state, a.deadline = State.ASSIGNED, deadline
        elif a.segment == index - 1 and a.state == State.COMMITTED:
            a.state, a.deadline = State.REVEALABLE, deadline
    _process_blocked_starts(rt, assignments)


def _process_blocked_starts(rt: Runtime, assignments: list[Assignment]) -> None:
    """Checkpoint i (segment i's start) cannot be uploaded while a verifier of segment i-1
    still owes its commit (`check_segment_committed`): segment i's upload deadline waits until
    it can be made (that verifier's own deadline runs meanwhile), then restarts in full."""
    waiting = {a.segment for a in assignments if a.state in (State.AWAITING_START, State.ASSIGNED)}
    for a in assignments:
        if a.state != State.AWAITING_START:
            continue
        if a.segment - 1 in waiting:
            a.deadline = FAR_FUTURE
        elif a.deadline == FAR_FUTURE:
            a.deadline = rt.clock.now() + rt.settings.move_timeout_s


# --- commit / reveal ---------------------------------------------------------------------------


def _lock_for_move(
    session: Session, rt: Runtime, assignment_id: int, who: str, state: State
) -> tuple[Job, Assignment]:
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
    """Once no verifier of `segment` still owes a commit, the solver's reveal clock starts (and
    its upload clock for segment + 1's start, `_process_blocked_starts`)."""
    assignments = repository.get_job_assignments(session, job_id)
    peers = [a for a in assignments if a.segment == segment]
    waiting = any(a.state in (State.AWAITING_START, State.ASSIGNED) for a in peers)
    for a in peers:
        if a.state == State.COMMITTED:
            a.deadline = FAR_FUTURE if waiting else rt.clock.now() + rt.settings.move_timeout_s
    _process_blocked_starts(rt, assignments)


def process_verification_commit(
    session: Session, rt: Runtime, who: str, assignment_id: int, commit_hash: str
) -> AssignmentView:
    job, assignment = _lock_for_move(session, rt, assignment_id, who, State.ASSIGNED)
    assignment.commit_hash, assignment.state = commit_hash, State.COMMITTED
    if jobs_repository.get_checkpoint(session, job.job_id, assignment.segment + 1) is not None:
        # a challenge of a segment whose end was already public: nothing more for the solver
        assignment.state = State.REVEALABLE
        assignment.deadline = rt.clock.now() + rt.settings.move_timeout_s
    session.flush()
    process_refresh_segment(session, rt, job.job_id, assignment.segment)
    process_movement(
        session,
        rt,
        "verification.committed",
        {
            "assignment": assignment.id,
            "job_id": job.job_id,
            "verifier": who,
            "segment": assignment.segment,
            "commit_hash": commit_hash,
        },
        [],
    )
    return get_assignment_view(assignment)


def process_verification_reveal(
    session: Session, rt: Runtime, who: str, assignment_id: int, root: str, salt: str
) -> tuple[Job, Assignment, dict]:
    """Open the commit: agreed (logged here) or disputed (the caller opens the game).
    Returns the job, the assignment and the log data of the reveal."""
    job, assignment = _lock_for_move(session, rt, assignment_id, who, State.REVEALABLE)
    if (
        compute_verification_commit(bytes.fromhex(root), bytes.fromhex(salt)).hex()
        != assignment.commit_hash
    ):
        raise InvalidInput("(root, salt) does not open the committed hash", "root")
    end = jobs_repository.get_checkpoint(session, job.job_id, assignment.segment + 1)
    assignment.claimed_root = root
    data = {
        "assignment": assignment.id,
        "job_id": job.job_id,
        "verifier": who,
        "segment": assignment.segment,
        "root": root,
        "salt": salt,
    }
    assignment.state = State.AGREED if root == end.state_root else State.DISPUTED
    if assignment.state == State.AGREED:
        jackpot = _forced_error_jackpot(session, job, assignment, root, end.state_root)
        legs = transfer(BURN_ACCOUNT, available(who), jackpot) if jackpot else []
        process_movement(session, rt, "verification.agreed", {**data, "jackpot": jackpot}, legs)
    return job, assignment, data


def _forced_error_jackpot(
    session: Session, job: Job, assignment: Assignment, revealed_root: str, true_root: str
) -> int:
    """A drawn assignment the public seed makes a forced error (`is_forced_error`) carries a
    planted end root; the verifier committed before any root was public, so revealing the true
    one proves it recomputed, and it earns the jackpot (`compute_forced_error_outcome`). The
    jackpot is paid out of what slashes burned, as far as that reaches."""
    seed = bytes.fromhex(job.selection_seed)
    if assignment.volunteer or not is_forced_error(seed, assignment.id, job.forced_error_ppm):
        return 0
    amount = compute_forced_error_jackpot(job.verifier_fee, job.forced_error_ppm)
    planted = compute_planted_root(seed, assignment.id)
    outcome, amount = compute_forced_error_outcome(
        bytes.fromhex(revealed_root), planted, bytes.fromhex(true_root), amount
    )
    return min(amount, get_balance(session, BURN_ACCOUNT)) if outcome == "jackpot" else 0


# --- conclusions -------------------------------------------------------------------------------


def get_paid_verifiers(assignments: list[Assignment]) -> list[str]:
    """Drawn verifiers that did their work on this job and never lost or missed a move (on any
    of their assignments, volunteer ones included). A volunteer is never paid a fee: the escrow
    holds fees for the drawn verifiers only; it earns a slashed solver's victim share instead."""
    bad = {a.verifier for a in assignments if a.state in (State.TIMED_OUT, State.REJECTED)}
    good = {a.verifier for a in assignments if a.commit_hash is not None and not a.volunteer}
    return sorted(good - bad)


def process_cancel_assignments(session: Session, job: Job) -> list[str]:
    """The job ended early: every move still due is void. Returns the verifiers to pay."""
    assignments = repository.get_job_assignments(session, job.job_id)
    for a in assignments:
        if a.state in ACTIVE:
            a.state = State.CANCELLED
    return get_paid_verifiers(assignments)


def is_job_owing_moves(session: Session, job: Job) -> bool:
    return any(a.state in ACTIVE for a in repository.get_job_assignments(session, job.job_id))


def get_job_paid_verifiers(session: Session, job: Job) -> list[str]:
    return get_paid_verifiers(repository.get_job_assignments(session, job.job_id))


def process_verifier_timeout(
    session: Session, rt: Runtime, job: Job, assignment: Assignment
) -> None:
    """A verifier missed its move: it loses up to the fee it would have earned, and its slot,
    and is replaced (`_add_replacement`), so a missed move never leaves a check undone. A
    volunteer is penalised alike but not replaced: its check was never owed to the job."""
    missed = assignment.state
    assignment.state = State.TIMED_OUT
    amount = compute_verifier_timeout_penalty(
        get_balance(session, stake(assignment.verifier)), job.verifier_fee
    )
    replacement, segment = (
        (None, None)
        if assignment.volunteer
        else _add_replacement(session, rt, job, assignment, missed)
    )
    session.flush()
    process_refresh_segment(session, rt, job.job_id, assignment.segment)
    data = {
        "assignment": assignment.id,
        "job_id": job.job_id,
        "verifier": assignment.verifier,
        "segment": assignment.segment,
        "missed": missed,
        "slashed": amount,
    }
    if not assignment.volunteer:  # a drawn one's replacement is the audit's to recompute
        data.update(replaced_by=replacement, replacement_segment=segment)
    process_movement(
        session,
        rt,
        "verification.volunteer_timed_out" if assignment.volunteer else "verification.timed_out",
        data,
        compute_slash_legs(stake(assignment.verifier), amount, job.submitter),
    )


def _add_replacement(
    session: Session, rt: Runtime, job: Job, missed: Assignment, missed_state: str
) -> tuple[str | None, int | None]:
    """Draw another verifier, from the job's public seed and the missed assignment's id, so
    anyone can recompute it. It must replay a segment whose end is still secret, or it could
    copy the solver's root: after a missed commit that is the same segment; after a missed
    reveal (the end is public by then) a segment not yet sampled whose end checkpoint was never
    uploaded, drawn from the same seed. (verifier, segment), or (None, None) when no verifier or
    no such segment is left. Volunteer assignments play no part in the draw (a self-selected
    party must not steer it); a drawn verifier that already volunteered on the segment has that
    assignment made its drawn one (reopened, if it had timed out)."""
    everything = repository.get_job_assignments(session, job.job_id)
    assignments = [a for a in everything if not a.volunteer]
    seed = compute_replacement_seed(bytes.fromhex(job.selection_seed), missed.id)
    segment = (
        missed.segment
        if missed_state == State.ASSIGNED
        else compute_secret_segment(
            seed, job.num_checkpoints - 1, _segments_seen(session, job, assignments)
        )
    )
    if segment is None:
        return None, None
    taken = {a.verifier for a in assignments if a.segment == segment} | {missed.verifier}
    pool = [(key, w) for key, w in _eligible_verifiers(session, rt, job) if key not in taken]
    chosen = compute_verifier_choice(seed, pool, 1)
    if not chosen:
        return None, None
    start_public = jobs_repository.get_checkpoint(session, job.job_id, segment) is not None
    fresh = State.ASSIGNED if start_public else State.AWAITING_START
    deadline = rt.clock.now() + rt.settings.move_timeout_s
    held = [a for a in everything if a.verifier == chosen[0] and a.segment == segment]
    if held:  # its challenge of a still-secret segment: that work now counts as the draw's
        held[0].volunteer = False
        if held[0].state in ACTIVE:  # a full move's time, as a fresh replacement would have
            held[0].deadline = max(held[0].deadline, deadline)
        else:
            held[0].state, held[0].deadline, held[0].commit_hash = fresh, deadline, None
    else:
        session.add(
            Assignment(
                job_id=job.job_id,
                verifier=chosen[0],
                segment=segment,
                state=fresh,
                deadline=deadline,
            )
        )
    return chosen[0], segment


def _segments_seen(session: Session, job: Job, assignments: list[Assignment]) -> set[int]:
    """Segments already sampled, or whose end checkpoint is public: not secret any more."""
    uploaded = jobs_repository.get_checkpoint_indices(session, job.job_id)
    return {a.segment for a in assignments} | {index - 1 for index in uploaded if index > 0}


def get_assignment_view(a: Assignment) -> AssignmentView:
    return AssignmentView(
        id=a.id,
        job_id=a.job_id,
        verifier=a.verifier,
        segment=a.segment,
        state=a.state,
        deadline=a.deadline,
        claimed_root=a.claimed_root,
        volunteer=bool(a.volunteer),
    )
