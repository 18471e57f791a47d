"""Conformance of one strategy: its games against an honest counterpart, checked by every game
invariant, and its money against honest play in the market simulation. What
`veritrain conformance --behaviour module:attribute` prints."""

import random
from dataclasses import asdict, dataclass
from typing import Any

from protocol.behaviours import BUILTIN
from protocol.dispute import SOLVER, VERIFIER
from protocol.economics import Market
from protocol.testing.games import GameCase, play_case
from protocol.testing.invariants import (
    assert_equivocation_loses,
    assert_game_ends,
    assert_honest_party_wins,
    assert_moves_within_bound,
    assert_pins_first_divergence,
    simulate_against_honest,
)

SEGMENT_STEPS = 100  # the simulator's segment length
CHECKS = {
    "honest counterpart wins": assert_honest_party_wins,
    "first divergence pinned": assert_pins_first_divergence,
    "moves within bound": assert_moves_within_bound,
    "equivocation loses": assert_equivocation_loses,
}


@dataclass(frozen=True)
class ConformanceReport:
    name: str
    role: str
    honest: bool
    games: int  # games played (segments where the strategy disagrees with the honest party)
    games_lost: int  # of those, the games the strategy lost
    failures: dict[str, str]  # invariant -> the first failure's message
    catch_rate: float  # per job: P(a verifier samples a bad segment) x P(it wins the game)
    expected_profit: float
    gain_over_honest: float

    @property
    def caught(self) -> bool:
        return self.catch_rate > 0

    @property
    def profitable(self) -> bool:
        """A deviation that earns at least what honest play does."""
        return not self.honest and self.gain_over_honest >= 0

    @property
    def passed(self) -> bool:
        """The protocol held: every invariant, and the deviation does not pay."""
        return not self.failures and not self.profitable

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "caught": self.caught, "profitable": self.profitable}


def run_conformance(
    behaviour: Any, market: Market | None = None, games: int = 200, seed: int = 0
) -> ConformanceReport:
    """Play `games` games of `behaviour` against the honest counterpart, on the segments where it
    departs from the truth, and simulate its money at `market`."""
    market = market or Market()
    rng = random.Random(seed)
    played, lost, failures = 0, 0, {}
    for case in _cases(behaviour, market, games, rng):
        result = play_case(case)
        if result is None:
            continue
        played += 1
        lost += result.final.winner != behaviour.role
        assert_game_ends(result)
        for name, check in CHECKS.items():
            try:
                check(result)
            except AssertionError as failure:
                failures.setdefault(name, str(failure))
    profit, honest_profit, catch = simulate_against_honest(behaviour, market, seed=seed)
    return ConformanceReport(
        name=str(behaviour.name),
        role=behaviour.role,
        honest=bool(behaviour.honest),
        games=played,
        games_lost=lost,
        failures=failures,
        catch_rate=round(catch, 4),
        expected_profit=round(profit, 3),
        gain_over_honest=round(profit - honest_profit, 3),
    )


def _cases(behaviour: Any, market: Market, games: int, rng: random.Random):
    """The strategy on random segments of a job, each against the honest counterpart."""
    honest_role = VERIFIER if behaviour.role == SOLVER else SOLVER
    for _ in range(games):
        index = rng.randrange(market.segments)
        start = index * SEGMENT_STEPS
        divergence = behaviour.divergence(start, start + SEGMENT_STEPS, index)
        if divergence is None and not _unbacked(behaviour):
            continue  # it computes this segment honestly: no game
        yield GameCase(
            start=start,
            length=SEGMENT_STEPS,
            chunks=rng.randint(1, 64),
            arity=rng.choice((2, 3, 4, 8)),
            seed=rng.randbytes(8),
            segment=index,
            **{behaviour.role: behaviour, honest_role: BUILTIN[(honest_role, "honest")]},
        )


def _unbacked(behaviour: Any) -> bool:
    return behaviour.policy == "fake-root" or getattr(behaviour, "claim", "replay") != "replay"
