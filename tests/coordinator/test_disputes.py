"""Disputes played over HTTP with the bisection game and ruled by the referee (a real worker step
under the job's profile): the party whose chunk the referee reproduces wins, one that cannot make
a legal move loses on time, the loser is slashed, and the audit still agrees."""

from pathlib import Path

import pytest

from cli.audit_cmd import check_coordinator
from protocol.dispute import (
    SOLVER,
    VERIFIER,
    compute_dispute_stall_bound_s,
    compute_rounds_bound,
)
from protocol.standin import Player, TraceTrajectory
from protocol.state import (
    compute_chunk_hashes,
    compute_model_root,
    compute_state_root,
    decode_state,
    encode_state,
)
from protocol.trajectory import Commitment, compute_trajectory_proof, compute_trajectory_root
from protocol.types import JobId, Root
from protocol.wire import AssignmentState, DisputeStatus, JobState, ProblemCode
from sdk.disputes import play_turn, play_until_idle
from sdk.responses import CoordinatorError, UploadView
from sdk.state_files import write_state_file
from tests.coordinator.market import commit_signed, funded, train_tiny_job, verify_segment
from tests.coordinator.server import REFEREE_TIMEOUT, client_factory, running_server

BOUNTY, FEE, STAKE, VSTAKE, PRICE = 1000, 50, 400, 500, 600


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_job(tmp_path_factory.mktemp("solver"))


@pytest.fixture
def sqlite_server(tmp_path):
    with running_server("sqlite", tmp_path) as server:
        yield server


@pytest.fixture
def make_client(sqlite_server):
    with client_factory(sqlite_server.url, timeout=REFEREE_TIMEOUT) as make:
        yield make


def _start(make_client, trained, num_segments):
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    verifier.register_verifier([trained.profile], VSTAKE)
    submitter.submit_job(
        trained.spec_json,
        BOUNTY,
        min_stake=STAKE,
        verifier_fee=FEE,
        num_verifiers=1,
        num_segments=num_segments,
        bidding_s=30,
    )
    solver.bid(trained.job_id, PRICE, STAKE, trained.profile)
    solver.advance_clock(31)
    _award(solver, trained.job_id)
    return submitter, solver, verifier


def _award(solver, job_id: str) -> None:
    """Close the bidding; a running sweeper may have awarded the job already, to this solver."""
    try:
        solver.award(job_id)
    except CoordinatorError as err:
        if err.status != 409 or solver.get_job(job_id).solver != solver.public_key:
            raise


def _upload(solver, trained, index, data=None, proof=None):
    solver.upload_checkpoint(
        trained.job_id,
        index,
        index,
        data or trained.checkpoint_bytes(index),
        proof or trained.proof(index),
    )


def _trace(states: dict[int, bytes]) -> TraceTrajectory:
    return TraceTrajectory(
        {step: compute_chunk_hashes(decode_state(data)) for step, data in states.items()}
    )


def test_lying_verifier_loses_and_is_slashed(sqlite_server, make_client, trained):
    submitter, solver, verifier = _start(make_client, trained, 1)
    commit_signed(solver, trained)
    [a] = verifier.get_assignments()
    seg = a.segment
    _upload(solver, trained, seg)
    wrong = bytes(32)
    salt = verify_segment(verifier, a.id, wrong)
    _upload(solver, trained, seg + 1)
    assert verifier.reveal_verification(a.id, wrong, salt).state is AssignmentState.DISPUTED
    [dispute] = solver.list_disputes()
    honest = _trace(
        {seg: trained.checkpoint_bytes(seg), seg + 1: trained.checkpoint_bytes(seg + 1)}
    )
    view = play_until_idle(solver, dispute.id, Player(SOLVER, solver.key, honest))
    assert (view.phase, view.turn) == ("chunks", "verifier")
    # the made-up root has no children behind it: the verifier cannot move and runs out of time
    assert play_until_idle(verifier, dispute.id, Player(VERIFIER, verifier.key, honest)) == view
    solver.advance_clock(sqlite_server.settings.move_timeout_s + 1)
    solver.sweep()
    ruled = solver.get_dispute(dispute.id)
    assert (ruled.status, ruled.winner, ruled.reason) == (
        DisputeStatus.RULED,
        "solver",
        "verifier missed its deadline",
    )
    assert verifier.get_account().escrow_and_stakes["stake:"] == VSTAKE - STAKE
    solver.advance_clock(sqlite_server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert solver.get_balance() == 10_000 + PRICE + STAKE // 2
    assert submitter.get_balance() == 10_000 - PRICE  # the lying verifier is not paid
    report = check_coordinator(solver)
    assert report.ok, report.problems


def _forged_trajectory(trained):
    """Honest checkpoints 0 and 1, a tampered checkpoint 2, and a commitment to them."""
    state = decode_state(trained.checkpoint_bytes(2))
    name = next(k for k in sorted(state) if k.startswith("param/"))
    state[name] = state[name] + 1e-3
    forged = encode_state(state)
    entries = trained.entries()[:2] + [(trained.entries()[2][0], compute_state_root(state))]
    commitment = Commitment(
        JobId(bytes.fromhex(trained.job_id)),
        compute_trajectory_root(entries),
        3,
        Root(compute_model_root(state)),
    )
    return forged, entries, commitment


def play_out_forged_dispute(solver, challenger, dispute_id, trained, forged):
    """The forging solver against an honest challenger over segment 1, turns alternating down
    the chunk tree; a player in the ruling phase asks the referee (one step from checkpoint 1,
    on file). Returns (the ruled dispute, the solver's trace, the honest trace)."""
    cheat = _trace({1: trained.checkpoint_bytes(1), 2: forged})
    honest = _trace({1: trained.checkpoint_bytes(1), 2: trained.checkpoint_bytes(2)})
    players = [
        (solver, Player(SOLVER, solver.key, cheat)),
        (challenger, Player(VERIFIER, challenger.key, honest)),
    ]
    for _ in range(20):
        for client, player in players:
            play_until_idle(client, dispute_id, player)
    return challenger.get_dispute(dispute_id), cheat, honest


def open_forged_dispute(make_client, trained):
    """A solver that forged checkpoint 2, both segments verified: segment 0 agreed, segment 1
    disputed. Returns (submitter, solver, verifier, the forged bytes, the open dispute)."""
    submitter, solver, verifier = _start(make_client, trained, 2)
    forged, entries, commitment = _forged_trajectory(trained)
    commit_signed(solver, trained, commitment, entries)
    by_segment = {a.segment: a for a in verifier.get_assignments()}
    assert set(by_segment) == {0, 1}
    _upload(solver, trained, 0, proof=compute_trajectory_proof(entries, 0))
    salt0 = verify_segment(verifier, by_segment[0].id, trained.entries()[1][1])
    _upload(solver, trained, 1, proof=compute_trajectory_proof(entries, 1))
    verifier.reveal_verification(by_segment[0].id, trained.entries()[1][1], salt0)
    true_root = trained.entries()[2][1]
    salt1 = verify_segment(verifier, by_segment[1].id, true_root)
    _upload(solver, trained, 2, data=forged, proof=compute_trajectory_proof(entries, 2))
    revealed = verifier.reveal_verification(by_segment[1].id, true_root, salt1)
    assert revealed.state is AssignmentState.DISPUTED
    [dispute] = verifier.list_disputes()
    return submitter, solver, verifier, forged, dispute


def test_cheating_solver_is_caught_and_slashed(sqlite_server, make_client, trained):
    submitter, solver, verifier, forged, dispute = open_forged_dispute(make_client, trained)
    ruling, cheat, honest = play_out_forged_dispute(solver, verifier, dispute.id, trained, forged)
    forged_chunk = next(
        i
        for i, (x, y) in enumerate(zip(cheat.chunk_hashes(2), honest.chunk_hashes(2), strict=True))
        if x != y
    )
    assert (ruling.phase, ruling.dispute_step, ruling.dispute_chunk) == ("over", 1, forged_chunk)
    assert (
        ruling.winner == "verifier"
        and ruling.reason == "the referee's step reproduced the verifier's chunk"
    )
    assert verifier.rule_dispute(dispute.id) == ruling  # asking again changes nothing
    job = solver.get_job(trained.job_id)
    assert job.state is JobState.FAILED and job.outcome == "solver_caught_by_referee"
    assert solver.get_balance() == 10_000 - STAKE
    assert verifier.get_balance() == 10_000 - VSTAKE + STAKE // 2 + FEE
    assert submitter.get_balance() == 10_000 - FEE
    report = check_coordinator(solver)
    assert report.ok, report.problems


def test_dispute_inside_a_segment_needs_the_solvers_state_and_rules_for_honest_work(
    tmp_path, make_client
):
    """A 4-step segment; a verifier whose replay goes wrong after step 2 pins step 2 → 3; the
    solver supplies the agreed state at step 2 (checked against its root) and wins."""
    from tests.coordinator.market import tiny_spec_json

    spec_json = {**tiny_spec_json(seed=7), "steps": 4, "checkpoint_interval": 4}
    job = train_tiny_job(tmp_path / "run", spec_json=spec_json)
    # Every step's state, computed like the referee's: in a worker pinned to the job's profile
    # (this process may run another thread count or ISA, whose bits differ).
    every_step = train_tiny_job(
        tmp_path / "every-step", spec_json={**spec_json, "checkpoint_interval": 1}
    )
    states = {step: decode_state(every_step.checkpoint_bytes(step)) for step in range(5)}
    honest = TraceTrajectory({s: compute_chunk_hashes(v) for s, v in states.items()})
    wrong = TraceTrajectory(
        {s: (h if s < 3 else [bytes(32)] * len(h)) for s, h in honest.chunks_by_step.items()}
    )
    submitter, solver, verifier = _start(make_client, job, 1)
    commit_signed(solver, job)
    [a] = verifier.get_assignments()
    _upload(solver, job, 0)
    salt = verify_segment(verifier, a.id, wrong.root(4))
    solver.upload_checkpoint(job.job_id, 1, 4, job.checkpoint_bytes(1), job.proof(1))
    verifier.reveal_verification(a.id, wrong.root(4), salt)
    [dispute] = solver.list_disputes()
    players = [
        (solver, Player(SOLVER, solver.key, honest)),
        (verifier, Player(VERIFIER, verifier.key, wrong)),
    ]
    supplied = []

    def agreed_state(step: int) -> Path:
        if not supplied:  # first, another step's state in one PUT: refused, the game waits
            with pytest.raises(CoordinatorError) as refused:
                solver.upload_dispute_state(dispute.id, encode_state(states[step + 1]))
            assert refused.value.problem_code is ProblemCode.CHECKPOINT_CORRUPT
            oversize = {
                "kind": "state",
                "sha256": "ab" * 32,
                "size": 2**34,
                "dispute_id": dispute.id,
            }
            with pytest.raises(CoordinatorError) as declared:  # a state has exactly one size
                solver._post(UploadView, "/v1/uploads", oversize)
            assert declared.value.status == 422 and "exactly" in str(declared.value)
        supplied.append(step)
        path = tmp_path / f"agreed-{step}.safetensors"
        write_state_file(path, states[step])  # then the file, in resumable signed parts
        return path

    for _ in range(12):
        for client, player in players:
            play_until_idle(client, dispute.id, player, agreed_state)
    assert supplied == [2]
    ruled = verifier.get_dispute(dispute.id)
    assert (ruled.dispute_step, ruled.winner, ruled.phase) == (2, "solver", "over")
    assert ruled.state["state_sha256"] != job.store.manifest.get("sha256")  # the supplied state
    agreed = tmp_path / "agreed-2.safetensors"
    with pytest.raises(CoordinatorError) as outsider:  # refused at the declaration, before a byte
        funded(make_client).upload_dispute_state_file(dispute.id, agreed)
    assert outsider.value.status == 403
    with pytest.raises(CoordinatorError) as nowhere:  # a dispute that does not exist
        solver.upload_dispute_state_file(10**12, agreed)
    assert nowhere.value.status == 404
    with pytest.raises(CoordinatorError) as late:  # ruled: no state is owed any more
        solver.upload_dispute_state_file(dispute.id, agreed)
    assert late.value.problem_code is ProblemCode.INVALID_STATE
    report = check_coordinator(solver)
    assert report.ok, report.problems


def test_a_dispute_dragged_out_by_both_parties_ends_within_its_stated_bound(
    sqlite_server, make_client, trained
):
    """Every move made one second before its deadline: the dispute still ends, and no later than
    `compute_dispute_stall_bound_s` after it opened (docs/dispute.md states the bound)."""
    submitter, solver, verifier, forged, dispute = open_forged_dispute(make_client, trained)
    settings = sqlite_server.settings
    cheat = _trace({1: trained.checkpoint_bytes(1), 2: forged})
    honest = _trace({1: trained.checkpoint_bytes(1), 2: trained.checkpoint_bytes(2)})
    players = {
        "solver": (solver, Player(SOLVER, solver.key, cheat)),
        "verifier": (verifier, Player(VERIFIER, verifier.key, honest)),
    }
    opened, view, moves = verifier.get_info().now, dispute, 0
    while view.status == DisputeStatus.OPEN:
        client, player = players.get(view.turn or "verifier", players["verifier"])
        client.advance_clock(max(0.0, view.deadline - client.get_info().now - 1))  # the last second
        view = play_turn(client, view, player)
        moves += 1
    stalled = verifier.get_info().now - opened
    bound = compute_dispute_stall_bound_s(
        1,  # the tiny job's segments are one step long
        len(cheat.chunk_hashes(2)),
        settings.move_timeout_s,
        settings.ruling_timeout_s,
        settings.referee_attempts,
    )
    assert view.winner == "verifier" and view.dispute_step == 1
    assert moves <= compute_rounds_bound(1, len(cheat.chunk_hashes(2)))
    assert stalled <= bound, (stalled, bound)
    assert stalled >= (moves - 1) * (settings.move_timeout_s - 2)  # it really was dragged out


def test_the_ruling_duration_histogram_records_a_ruling(sqlite_server, make_client, trained):
    """`veritrain_ruling_duration_seconds` observes a real referee ruling."""
    from tests.coordinator.test_metrics import scrape, value

    ruling_metric = "veritrain_ruling_duration_seconds"
    assert value(scrape(sqlite_server.url), ruling_metric + "_count") == 0
    _, solver, verifier, forged, dispute = open_forged_dispute(make_client, trained)
    ruling, _, _ = play_out_forged_dispute(solver, verifier, dispute.id, trained, forged)
    assert ruling.status is DisputeStatus.RULED and ruling.winner == "verifier"
    samples = scrape(sqlite_server.url)
    assert value(samples, ruling_metric + "_count") >= 1
    assert value(samples, ruling_metric + "_sum") > 0
    # the +Inf bucket holds every observation
    assert value(samples, ruling_metric + "_bucket", le="+Inf") == value(
        samples, ruling_metric + "_count"
    )
