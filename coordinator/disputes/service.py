"""Disputes: the coordinator drives `protocol.dispute`'s game and settles its outcome.

A verifier's revealed root that differs from the solver's opens a game over the segment. The
parties move over HTTP (signed requests carrying signed moves); the game pins one step s and one
state chunk c; the solver then owes the agreed state at s (the coordinator already has it when s
is the segment's start); the referee recomputes step s + 1 in a worker pinned to the job's
profile and compares chunk c with both claims. Outcome:
- solver right: the verifier's standing stake (up to the solver's stake on the job) is slashed,
  half to the solver; its assignment is rejected;
- verifier right: the job fails and the solver's stake is slashed, half to the verifier;
- neither: both are slashed (the solver's stake half to the submitter, the verifier's burned).
Whoever misses a move's deadline, or equivocates, loses as if ruled against. The ruling has a
deadline too (`ruling_timeout_s` per attempt, `referee_attempts` attempts): a state the referee
cannot step loses for the solver (its supplier); a referee that keeps failing ends the dispute
with nobody at fault (no slash; the solver's stake and the escrow go back).
What a ruling does to the job, the assignment and the stakes is `coordinator.transitions`'.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from coordinator.disputes import repository
from coordinator.disputes.referee import run_referee_chunk_hash
from coordinator.disputes.schemas import DisputeView
from coordinator.errors import Forbidden, InvalidState
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.checkpoints import (
    DecodedCheckpoint,
    compute_staged_checkpoint,
    get_checkpoint_row,
    get_state_layout,
)
from coordinator.ledger.service import process_movement
from coordinator.models import BLOB_STATE, Assignment, Dispute, Job
from coordinator.runtime import Runtime
from protocol.dispute import (
    OVER,
    REFEREE_FAULT,
    RULING,
    SOLVER,
    STATE,
    VERIFIER,
    Game,
    Move,
    compute_game_id,
    compute_initial_game,
    process_deadline,
    process_move,
    process_ruling,
    process_ruling_failed,
    process_ruling_retry,
    process_state_supplied,
)
from protocol.errors import CheckpointCorrupt
from protocol.spec import parse_job_spec
from protocol.state import count_layout_chunks
from protocol.state_stream import StreamedFile
from protocol.wire import DisputeStatus

DISPUTE_ARITY = 2


# --- opening ---------------------------------------------------------------------------------


def process_open_dispute(
    session: Session, rt: Runtime, job: Job, assignment: Assignment, verifier_root: str
) -> Dispute:
    """Start the game for a segment whose end the verifier disputes."""
    start = get_checkpoint_row(session, job.job_id, assignment.segment)
    end = get_checkpoint_row(session, job.job_id, assignment.segment + 1)
    now = int(rt.clock.now())
    game_id = compute_game_id(
        bytes.fromhex(job.job_id),
        assignment.segment,
        bytes.fromhex(assignment.verifier),
        assignment.id,
    )
    game = compute_initial_game(
        game_id=game_id,
        solver_key=job.solver,
        verifier_key=assignment.verifier,
        start_step=start.step,
        start_root=start.state_root,
        end_step=end.step,
        solver_root=end.state_root,
        verifier_root=verifier_root,
        num_chunks=count_layout_chunks(get_state_layout(rt, session, job)),
        now=now,
        move_timeout=rt.settings.move_timeout_s,
        arity=DISPUTE_ARITY,
        known_roots=_bound_solver_roots(session, job.job_id),
    )
    dispute = Dispute(
        job_id=job.job_id,
        assignment_id=assignment.id,
        status=DisputeStatus.OPEN,
        deadline=0.0,
        state_json="{}",
    )
    session.add(dispute)
    _store(
        dispute,
        _supply_start_state(game, start.step, now, rt.settings.ruling_timeout_s),
        {"segment": assignment.segment, "state_sha256": start.blob_sha256},
    )
    session.flush()
    rt.referee_workers.prewarm(
        parse_job_spec(json.loads(job.spec_json)).profile
    )  # ready by the ruling
    return dispute


def _bound_solver_roots(session: Session, job_id: str) -> dict[int, str]:
    """Roots the solver already answered in this job's other games: answering another is
    equivocation."""
    roots: dict[int, str] = {}
    for other in repository.get_job_disputes(session, job_id):
        roots.update(Game.from_json(json.loads(other.state_json)["game"]).roots)
    return roots


def _supply_start_state(game: Game, start_step: int, now: int, ruling_timeout: int) -> Game:
    """When the disputed step starts the segment, the agreed state is its first checkpoint,
    which the coordinator holds (the solver uploaded it)."""
    if game.phase == STATE and game.lo == start_step:
        return process_state_supplied(game, now, ruling_timeout)
    return game


def _store(dispute: Dispute, game: Game, extra: dict | None = None) -> None:
    state = json.loads(dispute.state_json)
    state.update(extra or {})
    state["game"] = game.to_json()
    dispute.state_json = json.dumps(state, sort_keys=True)
    dispute.deadline = float(game.deadline)


def get_game(dispute: Dispute) -> Game:
    return Game.from_json(json.loads(dispute.state_json)["game"])


# --- moves -----------------------------------------------------------------------------------


def lock_dispute(session: Session, dispute_id: int) -> tuple[Job, Dispute]:
    job = jobs_repository.lock_job(session, repository.get_dispute(session, dispute_id).job_id)
    return job, repository.lock_dispute(session, dispute_id)


def _party_of(game: Game, who: str) -> str:
    if who == game.solver_key:
        return SOLVER
    if who == game.verifier_key:
        return VERIFIER
    raise Forbidden("only the dispute's solver and verifier move in it")


def process_dispute_move(
    session: Session, rt: Runtime, who: str, dispute_id: int, move_json: dict
) -> tuple[Job, Dispute, Game]:
    job, dispute = lock_dispute(session, dispute_id)
    game = get_game(dispute)
    party = _party_of(game, who)  # before parsing: an outsider's move is never even read
    move = Move.from_json(move_json)
    if move.party != party:
        raise Forbidden("a party signs its own moves only")
    if dispute.status != DisputeStatus.OPEN:
        raise InvalidState(f"dispute {dispute_id} is already {dispute.status}")
    state = json.loads(dispute.state_json)
    now = int(rt.clock.now())
    game = _supply_start_state(
        process_move(game, move, now),
        get_checkpoint_row(session, job.job_id, state["segment"]).step,
        now,
        rt.settings.ruling_timeout_s,
    )
    _store(dispute, game)
    process_movement(
        session,
        rt,
        "dispute.move",
        {"dispute": dispute.id, "job_id": job.job_id, "move": move.to_json()},
        [],
    )
    return job, dispute, game


def check_state_owed(session: Session, who: str, dispute_id: int) -> Job:
    """Someone may send the agreed state now: the dispute is open, in its state phase, and `who`
    is one of its parties. Checked before a byte of it is received, and again when it is
    recorded. Returns the dispute's job."""
    dispute = repository.get_dispute(session, dispute_id)
    game = get_game(dispute)
    _party_of(game, who)
    if dispute.status != DisputeStatus.OPEN or game.phase != STATE:
        raise InvalidState("no state is owed in this dispute now")
    return jobs_repository.get_job(session, dispute.job_id)


def compute_staged_state(
    rt: Runtime, path: Path, dispute_id: int, streamed: StreamedFile | None = None
) -> DecodedCheckpoint:
    """Outside the transaction, streamed from the staged file: the bytes are the agreed state at
    the pinned step, with exactly the job's tensors, dtypes and shapes, so the referee can step
    it."""
    with rt.db.read() as session:
        dispute = repository.get_dispute(session, dispute_id)
        layout = get_state_layout(rt, session, jobs_repository.get_job(session, dispute.job_id))
        game = get_game(dispute)
    decoded = compute_staged_checkpoint(path, game.lo, layout, streamed)
    if decoded.state_root.hex() != game.roots[game.lo]:
        raise CheckpointCorrupt(f"this is not the agreed state at step {game.lo}")
    return decoded


def process_dispute_state(
    session: Session, rt: Runtime, who: str, dispute_id: int, decoded: DecodedCheckpoint
) -> DisputeView:
    """Record the agreed state, whose bytes are in the blob store already (put before this
    transaction, like a checkpoint's)."""
    job, dispute = lock_dispute(session, dispute_id)
    game = get_game(dispute)
    _party_of(game, who)
    if (
        dispute.status != DisputeStatus.OPEN
        or game.phase != STATE
        or decoded.step != game.lo
        or decoded.state_root.hex() != game.roots[game.lo]
    ):
        raise InvalidState("no state is owed, or not this one")
    jobs_repository.add_blob_if_missing(
        session, decoded.sha256, decoded.size, BLOB_STATE, uploader=who, created_at=rt.clock.now()
    )
    _store(
        dispute,
        process_state_supplied(game, int(rt.clock.now()), rt.settings.ruling_timeout_s),
        {"state_sha256": decoded.sha256, "state_supplier": who},
    )
    process_movement(
        session,
        rt,
        "dispute.state_supplied",
        {"dispute": dispute.id, "job_id": job.job_id, "step": game.lo, "sha256": decoded.sha256},
        [],
    )
    return get_dispute_view(dispute)


def process_dispute_deadline(
    session: Session, rt: Runtime, dispute_id: int
) -> tuple[Job, Dispute, Game] | None:
    """The party whose move is overdue loses; a missed ruling deadline ends the game by the last
    referee failure recorded (`RULING_FAILURE`; none recorded: the referee's own). None when
    nothing was due."""
    job, dispute = lock_dispute(session, dispute_id)
    if dispute.status != DisputeStatus.OPEN:
        return None
    now = int(rt.clock.now())
    game = get_game(dispute)
    if game.phase == RULING and now >= game.deadline:
        fault = json.loads(dispute.state_json).get("referee_fault", REFEREE_FAULT)
        game = process_ruling_failed(game, fault)
    else:
        game = process_deadline(game, now)
    if game.phase != OVER:
        return None
    _store(dispute, game)
    return job, dispute, game


# --- the referee -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefereeTask:
    spec_json: dict
    state_kind: str  # the pinned state's blob: one a party supplied, or a checkpoint
    state_sha256: str
    state_root: str
    chunk: int


def get_referee_task(rt: Runtime, session: Session, dispute_id: int) -> RefereeTask | None:
    """What the referee needs to recompute the pinned step; None unless a ruling is owed."""
    dispute = repository.get_dispute(session, dispute_id)
    game = get_game(dispute)
    if dispute.status != DisputeStatus.OPEN or game.phase != RULING:
        return None
    spec_json = json.loads(jobs_repository.get_job(session, dispute.job_id).spec_json)
    sha256 = json.loads(dispute.state_json)["state_sha256"]
    return RefereeTask(
        spec_json,
        jobs_repository.get_game_state_blob(session, sha256).kind,
        sha256,
        game.roots[game.lo],
        game.chunk,
    )


@contextmanager
def claim_ruling(rt: Runtime, dispute_id: int, wait: bool) -> Iterator[bool]:
    """Across replicas, one at a time reads a dispute's referee task, runs the referee and records
    the result (yields whether this caller holds the claim): a referee attempt, and the failure
    it may count, is never doubled. `process_referee_result`'s re-check under the row lock keeps
    a ruling single even without the claim."""
    with rt.db.claim("ruling", dispute_id, wait) as claimed:
        yield claimed


def run_referee(rt: Runtime, task: RefereeTask) -> bytes:
    """One training step in a warm worker pinned to the job's profile: the chunk's leaf hash.
    The worker reads the verified blob from a file: the replica never holds the state."""
    scratch = rt.settings.get_upload_dir()
    with rt.blobs.local_file(task.state_kind, task.state_sha256, scratch) as state_path:
        return run_referee_chunk_hash(rt, task.spec_json, state_path, task.state_root, task.chunk)


def process_referee_result(
    session: Session, dispute_id: int, chunk_hash: bytes
) -> tuple[Job, Dispute, Game] | None:
    job, dispute = lock_dispute(session, dispute_id)
    game = get_game(dispute)
    if dispute.status != DisputeStatus.OPEN or game.phase != RULING:  # ruled meanwhile: never twice
        return None
    game = process_ruling(game, chunk_hash)
    _store(dispute, game)
    return job, dispute, game


def process_referee_failure(
    session: Session, rt: Runtime, dispute_id: int, fault: str, message: str
) -> tuple[Job, Dispute, Game] | None:
    """The referee could not rule (`fault`: STATE_FAULT when the state cannot be stepped, else
    REFEREE_FAULT). Counted in the dispute's state_json (`referee_failures`); the game gets a
    fresh ruling deadline until `referee_attempts` failures, then ends by `RULING_FAILURE`.
    None when no ruling is owed any more."""
    job, dispute = lock_dispute(session, dispute_id)
    game = get_game(dispute)
    if dispute.status != DisputeStatus.OPEN or game.phase != RULING:
        return None
    failures = json.loads(dispute.state_json).get("referee_failures", 0) + 1
    now = int(rt.clock.now())
    if failures >= rt.settings.referee_attempts:
        game = process_ruling_failed(game, fault)
    else:
        game = process_ruling_retry(game, now, rt.settings.ruling_timeout_s)
    extra = {"referee_failures": failures, "referee_fault": fault, "referee_error": message[:500]}
    _store(dispute, game, extra)
    return job, dispute, game


def process_dispute_ruled(dispute: Dispute, game: Game) -> None:
    winner = "nobody" if game.extra.get("no_fault") else game.winner or "neither"
    dispute.status, dispute.winner = DisputeStatus.RULED, winner


def get_dispute_view(dispute: Dispute) -> DisputeView:
    state = json.loads(dispute.state_json)
    game = Game.from_json(state["game"])
    pinned = game.phase in (STATE, RULING) or (
        game.phase == OVER and game.node[1] - game.node[0] == 1
    )
    return DisputeView(
        id=dispute.id,
        job_id=dispute.job_id,
        assignment_id=dispute.assignment_id,
        status=dispute.status,
        winner=dispute.winner,
        phase=game.phase,
        turn=game.turn,
        deadline=game.deadline,
        round=game.round,
        segment=state["segment"],
        dispute_step=game.lo if game.hi - game.lo == 1 else None,
        dispute_chunk=game.chunk if pinned else None,
        reason=game.reason or None,
        state=state,
    )
