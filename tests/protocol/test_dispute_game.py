"""The dispute game on the stand-in program, through the public kit (`protocol.testing`):
10,300 played games in CI over every pair of behaviours and every divergence pattern (hypothesis
counts only cases where the parties disagree). An honest party never loses; a dispute pins the
first divergent step and chunk; the number of moves stays within 2·⌈log_k L⌉ + 2·⌈log2 chunks⌉
+ 1; equivocation, in the game or against another game of the job, loses at once."""

import pytest
from hypothesis import HealthCheck, given, settings

from protocol.dispute import SOLVER, VERIFIER, Game, compute_game_id, compute_rounds_bound
from protocol.errors import InternalError, InvalidInput
from protocol.standin import Player, StandinTrajectory, compute_first_divergence, play_game
from protocol.testing import (
    Divergence,
    GameCase,
    assert_game_invariants,
    build_solver_trajectory,
    build_truth,
    build_verifier_trajectory,
    compute_onsets,
    load_behaviour,
    play_case,
    start_case,
)
from protocol.testing.games import SOLVER_KEY, VERIFIER_KEY
from protocol.testing.strategies import played_games

FOLLOWING_CHEATS = [
    "perturb-step",
    "skip-steps",
    "interpolate",
    "wrong-data-order",
    "lower-precision",
    "honest-on-some-segments",
]


def games(count: int) -> settings:
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@games(4000)
@given(played_games(arity_choices=(2,)))
def test_binary_games_keep_every_invariant(result):
    assert_game_invariants(result)


@games(3000)
@given(played_games(arity_choices=(3, 4, 8)))
def test_kary_games_keep_every_invariant(result):
    assert_game_invariants(result)


@games(2000)
@given(
    played_games(solvers=FOLLOWING_CHEATS, verifiers=["honest"], equivocation_across_games=False)
)
def test_a_cheat_is_pinned_at_its_first_divergent_step_and_chunk(result):
    """Against an honest verifier every played game has one onset: where the cheat departs."""
    assert_game_invariants(result)
    divergence, game = result.case.solver_divergence, result.final
    first_chunk = divergence.first_chunks[0] if divergence.first_chunks else 0
    assert (game.lo, game.hi, game.chunk) == (
        divergence.first_step - 1,
        divergence.first_step,
        first_chunk,
    )
    assert game.winner == VERIFIER and "reproduced the verifier's chunk" in game.reason


@games(1000)
@given(played_games(solvers=["honest"], verifiers=["wrong-replay"]))
def test_a_wrong_replay_is_pinned_at_its_own_divergence(result):
    assert_game_invariants(result)
    assert "reproduced the solver's chunk" in result.final.reason


@games(300)
@given(
    played_games(
        max_length=300,
        solvers=["perturb-step", "wrong-data-order", "honest"],
        verifiers=["honest", "wrong-replay"],
        equivocation_across_games=False,
    )
)
def test_onsets_and_pins_match_a_linear_scan_on_short_segments(result):
    """The kit's closed-form onsets against a brute-force scan of every step."""
    case, game = result.case, result.final
    solver, verifier = result.solver_trajectory, result.verifier_trajectory
    onsets = compute_onsets(solver, verifier, case.start, case.end)
    scanned = [
        s
        for s in range(case.start + 1, case.end + 1)
        if solver.root(s) != verifier.root(s) and solver.root(s - 1) == verifier.root(s - 1)
    ]
    assert onsets == scanned
    step, chunk = compute_first_divergence(solver, verifier, case.start, case.end)
    if len(onsets) == 1:
        assert (game.hi, game.chunk) == (step, chunk)


def _case(solver="perturb-step", verifier="honest", **changes) -> GameCase:
    fields = dict(
        start=0,
        length=1000,
        chunks=8,
        arity=2,
        solver=load_behaviour(solver, SOLVER),
        verifier=load_behaviour(verifier, VERIFIER),
        seed=b"seed0000",
        solver_divergence=Divergence(500),
    )
    return GameCase(**{**fields, **changes})


def test_a_solver_that_contradicts_a_root_bound_in_another_game_loses_at_once():
    bound = ((500, b"\x01" * 32),)  # the first dissection point of (0, 1000]
    result = play_case(_case(bound_roots=bound))
    assert_game_invariants(result)
    assert (result.final.winner, result.final.moves) == (VERIFIER, 1)
    assert result.final.extra["equivocation_step"] == 500


def test_parties_that_rejoin_the_truth_are_pinned_at_an_onset_not_always_the_first():
    """Solver wrong on [101, 200] only, the verifier's replay wrong from 700: they disagree on two
    runs. Bisection keeps "agree at lo, disagree at hi", so it ends on an onset: here the later."""
    case = _case(
        verifier="wrong-replay",
        solver_divergence=Divergence(101, 200),
        verifier_divergence=Divergence(700),
    )
    result = play_case(case)
    assert compute_onsets(result.solver_trajectory, result.verifier_trajectory, 0, 1000) == [
        101,
        700,
    ]
    assert_game_invariants(result)
    assert (result.final.hi, result.final.winner) == (700, SOLVER)


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
    case = _case()
    players = (
        Player(SOLVER, SOLVER_KEY, build_solver_trajectory(case)),
        Player(VERIFIER, VERIFIER_KEY, build_verifier_trajectory(case)),
    )
    with pytest.raises(InternalError):
        play_game(start_case(case), *players, build_truth(case), max_moves=3)


# --- the ruling deadline ------------------------------------------------------------------------


def _ruling_game(now: int = 100, ruling_timeout: int | None = 900) -> Game:
    """A one-step, one-chunk game: straight to the state phase; the start state is supplied."""
    from protocol.dispute import compute_initial_game, process_state_supplied

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
    from protocol.dispute import OVER, RULING_FAILURE, process_ruling_failed

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
