"""The dispute game on the stand-in program: every combination of behaviours, 10,300 played games
in CI (hypothesis counts only cases where the parties disagree). An honest party never loses; a dispute pins exactly the first divergent step and chunk; the
number of moves stays within 2·⌈log_k L⌉ + 2·⌈log2 chunks⌉ + 1."""

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from protocol.behaviours import SOLVER_BEHAVIOURS
from protocol.dispute import (
    OVER,
    SOLVER,
    VERIFIER,
    Game,
    compute_game_id,
    compute_initial_game,
    compute_rounds_bound,
)
from protocol.errors import InternalError, InvalidInput
from protocol.standin import Player, StandinTrajectory, compute_first_divergence, play_game

SOLVER_KEY, VERIFIER_KEY = SigningKey(b"s" * 32), SigningKey(b"v" * 32)
GAME_VERIFIERS = ("honest", "wrong-trajectory", "frivolous-challenge", "no-show")


def games(count: int) -> settings:
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    start: int
    length: int
    chunks: int
    arity: int
    solver: str
    verifier: str
    bad_step: int  # where a cheating party's trajectory departs (offset into the segment, >= 1)
    bad_chunk: int | None
    seed: bytes


@st.composite
def cases(draw, max_length=10**6, arities=(2, 3, 4, 8), solvers=None, verifiers=GAME_VERIFIERS):
    length = draw(st.integers(1, max_length))
    chunks = draw(st.integers(1, 64))
    return Case(
        start=draw(st.integers(0, 10**6)),
        length=length,
        chunks=chunks,
        arity=draw(st.sampled_from(arities)),
        solver=draw(st.sampled_from(solvers or [b.name for b in SOLVER_BEHAVIOURS])),
        verifier=draw(st.sampled_from(verifiers)),
        bad_step=draw(st.integers(1, length)),
        bad_chunk=draw(st.one_of(st.none(), st.integers(0, chunks - 1))),
        seed=draw(st.binary(min_size=8, max_size=8)),
    )


def solver_side(case: Case) -> tuple[StandinTrajectory, str]:
    behaviour = next(b for b in SOLVER_BEHAVIOURS if b.name == case.solver)
    end = case.start + case.length
    if behaviour.honest:
        return StandinTrajectory(case.seed, case.chunks), "follow"
    if behaviour.policy == "fake-root":
        return StandinTrajectory(
            case.seed, case.chunks, fake_roots=((end, b"\xfa" * 32),)
        ), "follow"
    divergence = (case.start + case.bad_step, case.bad_chunk)
    return StandinTrajectory(
        case.seed, case.chunks, divergence, tag=case.solver.encode()
    ), behaviour.policy


def verifier_side(case: Case) -> tuple[StandinTrajectory, str]:
    end = case.start + case.length
    if case.verifier == "wrong-trajectory":  # a verifier whose replay is wrong, playing it out
        return StandinTrajectory(
            case.seed,
            case.chunks,
            (case.start + case.bad_step, case.bad_chunk),
            tag=b"verifier-bug",
        ), "follow"
    if case.verifier == "frivolous-challenge":  # a made-up root at the end, nothing behind it
        return StandinTrajectory(
            case.seed, case.chunks, fake_roots=((end, b"\xf0" * 32),)
        ), "follow"
    return StandinTrajectory(
        case.seed, case.chunks
    ), "no-show" if case.verifier == "no-show" else "follow"


def start_game(case: Case, solver: StandinTrajectory, verifier: StandinTrajectory) -> Game | None:
    end = case.start + case.length
    if solver.root(end) == verifier.root(end):
        return None  # they agree: no dispute to play
    truth = StandinTrajectory(case.seed, case.chunks)
    return compute_initial_game(
        game_id=compute_game_id(case.seed, 0, bytes(VERIFIER_KEY.verify_key), 0),
        solver_key=bytes(SOLVER_KEY.verify_key).hex(),
        verifier_key=bytes(VERIFIER_KEY.verify_key).hex(),
        start_step=case.start,
        start_root=truth.root(case.start).hex(),
        end_step=end,
        solver_root=solver.root(end).hex(),
        verifier_root=verifier.root(end).hex(),
        num_chunks=case.chunks,
        now=0,
        move_timeout=10,
        arity=case.arity,
    )


def run_case(case: Case) -> tuple[Game, StandinTrajectory, StandinTrajectory]:
    (solver, solver_policy), (verifier, verifier_policy) = solver_side(case), verifier_side(case)
    game = start_game(case, solver, verifier)
    assume(game is not None)  # agreeing parties play no game; only played games count
    truth = StandinTrajectory(case.seed, case.chunks)
    final = play_game(
        game,
        Player(SOLVER, SOLVER_KEY, solver, solver_policy),
        Player(VERIFIER, VERIFIER_KEY, verifier, verifier_policy),
        truth,
    )
    return final, solver, verifier


def check_outcome(case: Case) -> Game:
    final, solver, verifier = run_case(case)
    assert final.phase == OVER
    solver_honest, verifier_honest = case.solver == "honest", case.verifier == "honest"
    if solver_honest:
        assert final.winner == SOLVER, final.reason
    if verifier_honest:
        assert final.winner == VERIFIER, final.reason
    assert final.moves <= compute_rounds_bound(case.length, case.chunks, case.arity)
    return final


def expected_pin(case: Case, wrong: StandinTrajectory) -> tuple[int, int]:
    """Closed form of the first divergence of a 'follow' trajectory: (step, first bad chunk)."""
    assert wrong.divergence is not None
    step, chunk = wrong.divergence
    return step, chunk if chunk is not None else 0


@games(4000)
@given(cases(arities=(2,)))
def test_binary_games_honest_party_never_loses(case):
    check_outcome(case)


@games(3000)
@given(cases(arities=(3, 4, 8)))
def test_kary_games_honest_party_never_loses(case):
    check_outcome(case)


@games(2000)
@given(
    cases(
        solvers=[
            "perturb-step",
            "skip-steps",
            "interpolate",
            "wrong-data-order",
            "lower-precision",
            "honest-on-some-segments",
        ],
        verifiers=("honest",),
    )
)
def test_dispute_pins_the_first_divergent_step_and_chunk(case):
    final = check_outcome(case)
    solver, _ = solver_side(case)
    step, chunk = expected_pin(case, solver)
    assert (final.hi, final.lo, final.chunk) == (step, step - 1, chunk)


@games(1000)
@given(cases(solvers=["honest"], verifiers=("wrong-trajectory",)))
def test_wrong_verifier_is_pinned_at_its_own_divergence(case):
    final = check_outcome(case)
    _, verifier = run_case(case)[1:]
    step, chunk = expected_pin(case, verifier)
    assert (final.hi, final.chunk) == (step, chunk)
    assert "reproduced the solver's chunk" in final.reason


@games(300)
@given(
    cases(
        max_length=300,
        solvers=["perturb-step", "wrong-data-order", "honest"],
        verifiers=("honest", "wrong-trajectory"),
    )
)
def test_pin_matches_a_linear_scan_on_short_segments(case):
    final, solver, verifier = run_case(case)
    step, chunk = compute_first_divergence(solver, verifier, case.start, case.start + case.length)
    assert (final.hi, final.chunk) == (step, chunk)


def test_rounds_bound_is_logarithmic():
    assert compute_rounds_bound(1000, 64, 2) == 2 * 10 + 2 * 6 + 1
    assert compute_rounds_bound(1000, 64, 8) == 2 * 4 + 2 * 6 + 1
    assert compute_rounds_bound(1, 1) == 1


def test_first_divergence_of_agreeing_or_fake_trajectories_is_invalid_input():
    honest = StandinTrajectory(b"seed0000", 4)
    with pytest.raises(InvalidInput, match="agree"):
        compute_first_divergence(honest, StandinTrajectory(b"seed0000", 4), 0, 10)
    fake = StandinTrajectory(b"seed0000", 4, fake_roots=((7, b"\xf0" * 32),))  # no chunk behind it
    with pytest.raises(InvalidInput, match="no chunk"):
        compute_first_divergence(honest, fake, 0, 10)
    assert compute_first_divergence(honest, StandinTrajectory(b"seed0000", 4, (6, 2)), 0, 10) == (
        6,
        2,
    )


def test_a_game_that_does_not_end_is_our_bug_not_a_party_fault():
    case = Case(
        start=0,
        length=1000,
        chunks=8,
        arity=2,
        solver="perturb-step",
        verifier="honest",
        bad_step=500,
        bad_chunk=None,
        seed=b"seed0000",
    )
    (solver, policy), (verifier, _) = solver_side(case), verifier_side(case)
    game = start_game(case, solver, verifier)
    players = Player(SOLVER, SOLVER_KEY, solver, policy), Player(VERIFIER, VERIFIER_KEY, verifier)
    with pytest.raises(InternalError):
        play_game(game, *players, StandinTrajectory(case.seed, case.chunks), max_moves=3)


# --- the ruling deadline ------------------------------------------------------------------------


def _ruling_game(now: int = 100, ruling_timeout: int | None = 900) -> Game:
    """A one-step, one-chunk game: straight to the state phase; the start state is supplied."""
    from protocol.dispute import process_state_supplied

    game = compute_initial_game(
        game_id=compute_game_id(b"j" * 32, 0, b"v" * 32, 1),
        solver_key=SOLVER_KEY.verify_key.encode().hex(),
        verifier_key=VERIFIER_KEY.verify_key.encode().hex(),
        start_step=0,
        start_root="00" * 32,
        end_step=1,
        solver_root="11" * 32,
        verifier_root="22" * 32,
        num_chunks=1,
        now=now,
        move_timeout=60,
    )
    return process_state_supplied(game, now, ruling_timeout)


def test_the_ruling_phase_has_its_own_deadline_and_retries_move_it():
    from protocol.dispute import RULING, process_deadline, process_ruling_retry

    game = _ruling_game(now=100, ruling_timeout=900)
    assert (game.phase, game.deadline) == (RULING, 1000)
    assert _ruling_game(now=100, ruling_timeout=None).deadline == 160  # default: move timeout
    assert process_deadline(game, 10**9) == game  # no party to blame: the caller decides
    retried = process_ruling_retry(game, 950, 900)
    assert (retried.phase, retried.deadline, retried.round) == (RULING, 1850, game.round)


@pytest.mark.parametrize(
    ("fault", "winner", "no_fault"),
    [("state", VERIFIER, False), ("referee", None, True)],
)
def test_a_ruling_that_fails_ends_by_the_ruling_failure_table(fault, winner, no_fault):
    from protocol.dispute import RULING_FAILURE, process_ruling_failed

    over = process_ruling_failed(_ruling_game(), fault)
    assert (over.phase, over.winner, over.turn) == (OVER, winner, None)
    assert over.extra == {"ruling_failure": fault, "no_fault": no_fault}
    assert over.reason == RULING_FAILURE[fault][2]
    assert Game.from_json(over.to_json()) == over


def test_ruling_failures_only_in_the_ruling_phase():
    from protocol.dispute import IllegalMove, process_ruling_failed, process_ruling_retry

    game = _ruling_game()
    over = process_ruling_failed(game, "referee")
    with pytest.raises(IllegalMove):
        process_ruling_failed(over, "state")
    with pytest.raises(IllegalMove):
        process_ruling_retry(over, 0, 900)
    with pytest.raises(InvalidInput):
        process_ruling_failed(game, "bad luck")
