"""The kit has teeth: deliberately broken copies of protocol/dispute.py (the verifier's pick goes
to the wrong child, the referee's verdict is swapped, the equivocation check is gone) fail the
same properties the real game passes, and the stateful machines run over the real rules."""

import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.stateful import rule, run_state_machine_as_test

from protocol import dispute
from protocol.testing import assert_game_invariants
from protocol.testing.machines import DisputeGameMachine, LedgerRulesMachine
from protocol.testing.strategies import played_games

MUTANTS = {
    "pick-wrong-child": (
        "side = 0 if mine[0] != game.split[0] else 1",
        "side = 1 if mine[0] != game.split[0] else 0",
    ),
    "verdict-swapped": (
        "winner = SOLVER if truth == solver_leaf else VERIFIER if truth == verifier_leaf",
        "winner = VERIFIER if truth == solver_leaf else SOLVER if truth == verifier_leaf",
    ),
    "equivocation-check-removed": (
        "if game.roots.get(step, root) != root:",
        "if False:",
    ),
}
CHECK = settings(
    max_examples=600,
    deadline=None,
    database=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
FIND = settings(CHECK, phases=[Phase.generate])  # a broken game only has to fail: no shrinking


def load_mutant(name: str) -> types.ModuleType:
    """protocol/dispute.py with one line changed, as a module of its own."""
    old, new = MUTANTS[name]
    source = Path(dispute.__file__).read_text()
    assert source.count(old) == 1, f"mutant {name} no longer applies to protocol/dispute.py"
    module = types.ModuleType(f"dispute_mutant_{name.replace('-', '_')}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source.replace(old, new), f"<mutant {name}>", "exec"), module.__dict__)
    return module


def every_invariant_holds(rules: types.ModuleType, check_settings: settings = CHECK) -> None:
    @check_settings
    @given(played_games(rules=rules))
    def check(result):
        assert_game_invariants(result)

    check()


def test_the_real_game_passes_the_same_check():
    every_invariant_holds(dispute)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_broken_game_fails_the_kit(name):
    with pytest.raises(AssertionError):
        every_invariant_holds(load_mutant(name), FIND)


def test_the_game_machine_catches_a_swapped_verdict():
    class SwappedVerdict(DisputeGameMachine):
        rules_module = load_mutant("verdict-swapped")
        max_length = 8  # short games reach the referee within a few steps

    with pytest.raises(AssertionError, match="honest verifier lost"):
        run_state_machine_as_test(SwappedVerdict, settings=FIND)


class GameWithAgreeingVerifier(DisputeGameMachine):
    """A user's extra move: a verifier that 'disputes' by posting the solver's own root."""

    @rule()
    def verifier_claims_agreement(self):
        game = self.game
        if game.phase == dispute.STEPS and game.turn == dispute.VERIFIER:
            move = self.sign("verifier", "choose", {"index": 0, "root": game.roots[game.points[0]]})
            assert not self.submit(move), "agreement was accepted as a dispute"


TestDisputeGame = GameWithAgreeingVerifier.TestCase
TestDisputeGame.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, database=None
)
TestLedgerRules = LedgerRulesMachine.TestCase
TestLedgerRules.settings = settings(
    max_examples=300, stateful_step_count=30, deadline=None, database=None
)
