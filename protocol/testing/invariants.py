"""The properties dispute resolution promises, as functions that raise AssertionError saying which
one failed, for which case and why. `assert_game_invariants` checks every game-level one; the
economic one (`assert_no_profitable_deviation`) runs the market simulation."""

import random
from typing import Any

from protocol.behaviours import BUILTIN
from protocol.dispute import (
    OVER,
    SOLVER,
    STEPS,
    VERIFIER,
    compute_dissection_points,
    compute_rounds_bound,
)
from protocol.economics import Market, simulate_solver, simulate_verifier
from protocol.testing.games import GameResult, compute_first_differing_chunk, compute_onsets

FOLLOWING = "follow"


def _fail(result: GameResult, what: str) -> AssertionError:
    game = result.final
    return AssertionError(
        f"{what}\n  case: {result.case.describe()}\n  game ended: winner {game.winner}, "
        f"'{game.reason}', steps ({game.lo}, {game.hi}], chunk node {game.node}, "
        f"{game.moves} moves"
    )


def assert_game_ends(result: GameResult) -> None:
    if result.final.phase != OVER:
        raise _fail(result, f"the game did not end (phase {result.final.phase})")


def assert_honest_party_wins(result: GameResult) -> None:
    """An honest solver or an honest verifier never loses, whatever its counterpart does."""
    assert_game_ends(result)
    for party, behaviour in ((SOLVER, result.case.solver), (VERIFIER, result.case.verifier)):
        if behaviour.honest and result.final.winner != party:
            raise _fail(result, f"the honest {party} ({behaviour.name}) lost")


def assert_moves_within_bound(result: GameResult) -> None:
    """No game takes more moves than `compute_rounds_bound(length, chunks, arity)`."""
    case = result.case
    bound = compute_rounds_bound(case.length, case.chunks, case.arity)
    if result.final.moves > bound:
        raise _fail(result, f"{result.final.moves} moves exceed the bound of {bound}")


def assert_pins_first_divergence(result: GameResult) -> None:
    """When both parties answer from their trajectories, the game ends on one step s whose state
    they agree on before it and disagree on after it (so the first divergent step when they
    diverge once and stay apart), at the first chunk where they differ there. Made-up roots,
    no-shows and equivocation end games otherwise: not checked here."""
    case, game = result.case, result.final
    if not _both_follow(result) or "reproduced" not in game.reason:
        return
    solver, verifier = result.solver_trajectory, result.verifier_trajectory
    onsets = compute_onsets(solver, verifier, case.start, case.end)
    if game.hi not in onsets or game.lo != game.hi - 1:
        raise _fail(result, f"pinned steps ({game.lo}, {game.hi}], not a divergence of {onsets}")
    chunk = compute_first_differing_chunk(solver, verifier, game.hi)
    if game.chunk != chunk:
        raise _fail(result, f"pinned chunk {game.chunk}, not the first differing chunk {chunk}")


def assert_equivocation_loses(result: GameResult) -> None:
    """A solver that posts a root other than one it is bound to (in this game or another of the
    job) loses at that very move, and the game names the step."""
    for before, (event, after) in zip(_games_before(result), result.events, strict=True):
        move = event.get("move")
        if before.phase != STEPS or not move or move["kind"] != "dissect":
            continue
        points = compute_dissection_points(before.lo, before.hi, before.arity)
        posted = dict(zip(points, move["payload"]["roots"], strict=False))
        contradicted = [s for s, r in posted.items() if before.roots.get(s, r) != r]
        if contradicted and (
            after.phase != OVER
            or after.winner != VERIFIER
            or after.extra.get("equivocation_step") not in contradicted
        ):
            raise _fail(result, f"the solver contradicted its bound roots at {contradicted}")


def assert_game_invariants(result: GameResult) -> None:
    """Every game-level invariant above."""
    assert_game_ends(result)
    assert_honest_party_wins(result)
    assert_moves_within_bound(result)
    assert_pins_first_divergence(result)
    assert_equivocation_loses(result)


def simulate_against_honest(
    behaviour: Any, market: Market | None = None, trials: int = 200, seed: int = 0
) -> tuple[float, float, float]:
    """(expected profit, an honest party's expected profit, catch rate) of `behaviour` at
    `market`, on common random numbers so the difference is not sampling noise."""
    market = market or Market()
    simulate = simulate_solver if behaviour.role == SOLVER else simulate_verifier
    honest = BUILTIN[(behaviour.role, "honest")]  # the honest built-ins are the yardstick
    honest_profit, _ = simulate(honest, market, trials, random.Random(seed))
    profit, catch = simulate(behaviour, market, trials, random.Random(seed))
    return profit, honest_profit, catch


def compute_gain_over_honest(
    behaviour: Any, market: Market | None = None, trials: int = 200, seed: int = 0
) -> tuple[float, float]:
    """(expected profit − an honest party's, catch rate) of `behaviour` at `market`."""
    profit, honest_profit, catch = simulate_against_honest(behaviour, market, trials, seed)
    return profit - honest_profit, catch


def assert_no_profitable_deviation(
    behaviour: Any, market: Market | None = None, trials: int = 200, seed: int = 0
) -> None:
    """A dishonest behaviour earns strictly less than honest play at `market`."""
    if behaviour.honest:
        return
    gain, catch = compute_gain_over_honest(behaviour, market, trials, seed)
    if gain >= 0:
        raise AssertionError(
            f"{behaviour.role} behaviour {behaviour.name} earns {gain:+.3f} over honest play "
            f"(caught at rate {catch:.3f}) at {market or Market()}"
        )


def _both_follow(result: GameResult) -> bool:
    case = result.case
    return (
        case.solver.policy == FOLLOWING
        and case.verifier.policy == FOLLOWING
        and not result.solver_trajectory.fake_roots
        and not result.verifier_trajectory.fake_roots
        and not case.bound_roots
    )


def _games_before(result: GameResult) -> list:
    return [result.initial, *(after for _, after in result.events[:-1])]
