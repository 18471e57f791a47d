"""Every phase has a deadline, the ruling included: a referee that cannot step the agreed state
ends the dispute against the state's supplier (the solver); a referee that keeps failing ends it
with nobody at fault (no slash, stake and escrow back) — within move deadlines +
ruling_timeout_s × referee_attempts (docs/dispute.md)."""

from types import SimpleNamespace

import pytest
import torch

from cli.audit_cmd import check_coordinator
from coordinator.disputes import service as dispute_service
from coordinator.jobs import checkpoints
from protocol.dispute import (
    REFEREE_FAULT,
    RULING,
    RULING_FAILURE,
    SOLVER,
    STATE_FAULT,
    VERIFIER,
)
from protocol.errors import InternalError
from protocol.spec import compute_job_id, parse_job_spec
from protocol.standin import Player, TraceTrajectory
from protocol.state import (
    compute_chunk_hashes,
    compute_model_root,
    compute_state_root,
    encode_state,
)
from protocol.training import build_program
from protocol.trajectory import Commitment, compute_trajectory_proof, compute_trajectory_root
from protocol.types import JobId, Root, StepIndex
from protocol.wire import AssignmentState, DisputeStatus, JobState
from sdk.disputes import play_turn
from tests.coordinator.market import commit_signed, funded, tiny_spec_json, verify_segment
from tests.coordinator.server import REFEREE_TIMEOUT, client_factory, running_server

BOUNTY, FEE, STAKE, VSTAKE, PRICE = 1000, 50, 400, 500, 600
FIXED_COORDINATOR_KEY = "0123456789abcdef" * 4


def _made_up(step: int, value: float) -> dict[str, torch.Tensor]:
    """A state with the right step and one made-up tensor: no training program can step it."""
    return {"step": torch.tensor(step, dtype=torch.int64), "param/made_up": torch.full((3,), value)}


@pytest.fixture
def server(tmp_path, monkeypatch):
    # As before the full state checks at upload: a made-up state with a valid proof gets in.
    # The referee (in its own worker process) still checks, and must not fail with a KeyError.
    monkeypatch.setattr(checkpoints, "check_streamed_layout", lambda actual, expected: None)
    # ... and the game is sized by the made-up states' chunks, not by the job's layout
    made_up_chunks = len(compute_chunk_hashes(_made_up(0, 0.0)))
    monkeypatch.setattr(dispute_service, "count_layout_chunks", lambda layout: made_up_chunks)
    # A fixed coordinator key fixes the selection beacon, so the draw over this test's fixed
    # commitment is fixed too: segment 1, whose start is a made-up state (checkpoint 0 must be
    # the spec's true initial state, or the commitment itself is slashed).
    with running_server("sqlite", tmp_path, signing_key_hex=FIXED_COORDINATOR_KEY) as srv:
        yield srv


@pytest.fixture
def make_client(server):
    with client_factory(server.url, timeout=REFEREE_TIMEOUT) as make:
        yield make


def _open_ruling(make_client):
    """A job whose solver committed to made-up states; a dispute over the verified segment,
    played down to its ruling phase. Returns (submitter, solver, verifier, dispute view)."""
    spec = tiny_spec_json()
    job = SimpleNamespace(
        spec_json=spec,
        job_id=compute_job_id(parse_job_spec(spec)).hex(),
        profile=parse_job_spec(spec).profile.label,
    )
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    verifier.register_verifier([job.profile], VSTAKE)
    submitter.submit_job(
        spec, BOUNTY, min_stake=STAKE, verifier_fee=FEE, num_verifiers=1, bidding_s=30
    )
    solver.bid(job.job_id, PRICE, STAKE, job.profile)
    solver.advance_clock(31)
    solver.award(job.job_id)
    initial = build_program(parse_job_spec(spec)).initial_state()
    states = [initial] + [_made_up(k, float(k)) for k in (1, 2)]
    entries = [(StepIndex(k), compute_state_root(s)) for k, s in enumerate(states)]
    commitment = Commitment(
        JobId(bytes.fromhex(job.job_id)),
        compute_trajectory_root(entries),
        3,
        Root(compute_model_root(states[2])),
    )
    commit_signed(solver, job, commitment, entries)
    [a] = verifier.get_assignments()
    seg = a.segment
    assert seg == 1, "the fixed key no longer draws segment 1: pick another FIXED_COORDINATOR_KEY"
    claimed = _made_up(seg + 1, 99.0)

    def upload(i):
        proof = compute_trajectory_proof(entries, i)
        solver.upload_checkpoint(job.job_id, i, i, encode_state(states[i]), proof)

    upload(seg)
    salt = verify_segment(verifier, a.id, compute_state_root(claimed))
    upload(seg + 1)
    revealed = verifier.reveal_verification(a.id, compute_state_root(claimed), salt)
    assert revealed.state is AssignmentState.DISPUTED
    [dispute] = solver.list_disputes()
    start = compute_chunk_hashes(states[seg])
    players = {
        SOLVER: (
            solver,
            Player(
                SOLVER,
                solver.key,
                TraceTrajectory({seg: start, seg + 1: compute_chunk_hashes(states[seg + 1])}),
            ),
        ),
        VERIFIER: (
            verifier,
            Player(
                VERIFIER,
                verifier.key,
                TraceTrajectory({seg: start, seg + 1: compute_chunk_hashes(claimed)}),
            ),
        ),
    }
    view = solver.get_dispute(dispute.id)
    for _ in range(10):
        if view.phase == RULING:
            break
        client, player = players[view.turn]
        view = play_turn(client, view, player)
    assert view.phase == RULING and view.status == DisputeStatus.OPEN, view
    return submitter, solver, verifier, view


def _assert_ruled(client, dispute_id, winner, fault, failures):
    view = client.get_dispute(dispute_id)
    assert (view.status, view.phase, view.winner) == (DisputeStatus.RULED, "over", winner)
    assert view.reason == RULING_FAILURE[fault][2]
    assert (view.state["referee_fault"], view.state["referee_failures"]) == (fault, failures)
    return view


def test_unsteppable_agreed_state_loses_for_its_supplier_within_the_bound(server, make_client):
    """The real referee (a warm worker) refuses the made-up state with a typed UnsteppableState
    (never a KeyError/500); after referee_attempts failures the solver, who supplied it, loses."""
    settings = server.settings
    submitter, solver, verifier, view = _open_ruling(make_client)
    for attempt in range(1, settings.referee_attempts + 1):
        ruled = verifier.rule_dispute(view.id)  # a 200 every time, never a 500
        if attempt < settings.referee_attempts:
            assert ruled.status == DisputeStatus.OPEN and ruled.phase == RULING
            assert ruled.state["referee_failures"] == attempt
            assert ruled.state["referee_fault"] == STATE_FAULT
            assert "UnsteppableState" in ruled.state["referee_error"]
            assert "tensor 'opt/" in ruled.state["referee_error"]  # names what is wrong
    _assert_ruled(verifier, view.id, VERIFIER, STATE_FAULT, settings.referee_attempts)
    job = solver.get_job(view.job_id)
    assert job.state is JobState.FAILED and job.outcome == "solver_unsteppable_state"
    assert solver.get_balance() == 10_000 - STAKE
    assert verifier.get_balance() == 10_000 - VSTAKE + STAKE // 2 + FEE
    assert submitter.get_balance() == 10_000 - FEE
    report = check_coordinator(solver)
    assert report.ok, report.problems


def _failing_referee(monkeypatch, calls: list):
    def fail(*args, **kwargs):
        calls.append(1)
        raise InternalError("the referee's worker died")

    monkeypatch.setattr(dispute_service, "run_referee_chunk_hash", fail)


def test_a_missed_ruling_deadline_ends_the_dispute_with_nobody_at_fault(
    server, make_client, monkeypatch
):
    """The referee fails once (its own fault); nobody asks again; the ruling deadline passes and
    the sweeper ends the dispute: no slash, the solver's stake and the whole escrow go back."""
    calls: list = []
    _failing_referee(monkeypatch, calls)
    settings = server.settings
    submitter, solver, verifier, view = _open_ruling(make_client)
    deadline = view.deadline
    once = verifier.rule_dispute(view.id)
    assert (once.status, once.state["referee_failures"]) == (DisputeStatus.OPEN, 1)
    assert once.deadline >= deadline  # a fresh ruling_timeout_s for the next attempt
    solver.advance_clock(settings.ruling_timeout_s - 5)
    solver.sweep()
    assert solver.get_dispute(view.id).status == DisputeStatus.OPEN  # not yet due
    solver.advance_clock(10)
    solver.sweep()
    _assert_ruled(solver, view.id, "nobody", REFEREE_FAULT, 1)
    job = solver.get_job(view.job_id)
    assert job.state is JobState.FAILED and job.outcome == "referee_failed"
    assert solver.get_balance() == 10_000  # stake back, no price
    assert submitter.get_balance() == 10_000  # escrow back in full
    assert verifier.get_account().escrow_and_stakes["stake:"] == VSTAKE
    assert calls == [1]
    report = check_coordinator(solver)
    assert report.ok, report.problems


def test_referee_failures_are_retried_a_bounded_number_of_times(server, make_client, monkeypatch):
    calls: list = []
    _failing_referee(monkeypatch, calls)
    settings = server.settings
    _submitter, solver, verifier, view = _open_ruling(make_client)
    for _ in range(settings.referee_attempts + 2):  # asking after the end changes nothing
        verifier.rule_dispute(view.id)
    assert len(calls) == settings.referee_attempts
    _assert_ruled(solver, view.id, "nobody", REFEREE_FAULT, settings.referee_attempts)
    assert solver.get_job(view.job_id).state is JobState.FAILED
