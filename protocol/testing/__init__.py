"""veritrain's kit for testing dispute resolution: whole games as data, the invariants the game
promises, and a conformance run of one strategy. Pure: it imports no server, database or network
code. `protocol.testing.strategies` and `protocol.testing.machines` also need `hypothesis`
(`pip install 'veritrain[testing]'`).

Stability (KIT_VERSION 1): the names exported here and from `strategies` and `machines`, their
parameters and the fields of their results keep their meaning across minor releases; new
optional parameters and fields may be added. A change that breaks a caller raises KIT_VERSION and
is listed in docs/testing.md. Everything starting with an underscore is private.
"""

from protocol.behaviours import Behaviour
from protocol.economics import Market
from protocol.standin import Divergence, StandinTrajectory
from protocol.testing.conformance import ConformanceReport, run_conformance
from protocol.testing.games import (
    WRONG_REPLAY,
    GameCase,
    GameResult,
    build_solver_trajectory,
    build_truth,
    build_verifier_trajectory,
    compute_first_differing_chunk,
    compute_onsets,
    load_behaviour,
    play_case,
    start_case,
)
from protocol.testing.invariants import (
    assert_equivocation_loses,
    assert_game_ends,
    assert_game_invariants,
    assert_honest_party_wins,
    assert_moves_within_bound,
    assert_no_profitable_deviation,
    assert_pins_first_divergence,
    compute_gain_over_honest,
    simulate_against_honest,
)

KIT_VERSION = 1

__all__ = [
    "KIT_VERSION",
    "WRONG_REPLAY",
    "Behaviour",
    "ConformanceReport",
    "Divergence",
    "GameCase",
    "GameResult",
    "Market",
    "StandinTrajectory",
    "assert_equivocation_loses",
    "assert_game_ends",
    "assert_game_invariants",
    "assert_honest_party_wins",
    "assert_moves_within_bound",
    "assert_no_profitable_deviation",
    "assert_pins_first_divergence",
    "build_solver_trajectory",
    "build_truth",
    "build_verifier_trajectory",
    "compute_first_differing_chunk",
    "compute_gain_over_honest",
    "compute_onsets",
    "load_behaviour",
    "play_case",
    "run_conformance",
    "simulate_against_honest",
    "start_case",
]
