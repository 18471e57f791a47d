"""Whole dispute games on the stand-in program, described as data and played to the end.

A `GameCase` names a segment, a state size, a dissection arity, a solver and a verifier behaviour
(built-in or your own object, see `protocol.behaviours`), where each dishonest trajectory
departs from the true one (`Divergence`), and any roots the solver bound itself to in other games
of the same job. `play_case` builds both parties' trajectories, plays the game with the real rules
(`protocol.dispute`, or a modified copy passed as `rules`) and returns every event.
"""

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nacl.signing import SigningKey

from protocol import dispute
from protocol.behaviours import Behaviour
from protocol.behaviours import load_behaviour as load_market_behaviour
from protocol.dispute import SOLVER, VERIFIER, Game, compute_game_id
from protocol.standin import Divergence, Player, StandinTrajectory, iterate_game

SOLVER_KEY, VERIFIER_KEY = SigningKey(b"s" * 32), SigningKey(b"v" * 32)
MOVE_TIMEOUT = 10
# Verifier claims with no replayed state behind them: the root at the segment's end is made up.
UNBACKED_CLAIMS = frozenset({"made-up", "guess", "start-root"})
# Not a market strategy but a fault every implementation must survive: a verifier whose replay
# went wrong somewhere, and who plays its wrong roots out in good faith.
WRONG_REPLAY = Behaviour(
    "wrong-replay", "verifier", False, "its replay goes wrong and it plays that out", offset=1
)


@dataclass(frozen=True)
class GameCase:
    start: int  # the segment (start, start + length] both parties accept the start of
    length: int
    chunks: int  # leaves of a state's Merkle tree
    arity: int  # k of the k-ary step dissection
    solver: Any  # a behaviour with role "solver"
    verifier: Any  # a behaviour with role "verifier"
    seed: bytes  # what makes one case's states differ from another's
    solver_divergence: Divergence | None = None  # where a dishonest solver's trajectory departs
    verifier_divergence: Divergence | None = None  # where a wrong replay departs
    bound_roots: tuple[tuple[int, bytes], ...] = ()  # roots the solver bound in other games
    segment: int = 0  # the segment's index in its job (behaviours may cheat on some only)

    @property
    def end(self) -> int:
        return self.start + self.length

    def describe(self) -> str:
        return (
            f"solver {self.solver.name} {self.solver_divergence}, verifier {self.verifier.name} "
            f"{self.verifier_divergence}, segment ({self.start}, {self.end}], {self.chunks} "
            f"chunks, arity {self.arity}, bound roots at {[s for s, _ in self.bound_roots]}"
        )


@dataclass(frozen=True)
class GameResult:
    case: GameCase
    initial: Game
    final: Game
    events: tuple[tuple[dict[str, Any], Game], ...]  # (event, game after it), in order
    solver_trajectory: StandinTrajectory
    verifier_trajectory: StandinTrajectory
    truth: StandinTrajectory

    def __repr__(self) -> str:  # a failing example prints the case and its end, not every event
        game = self.final
        return (
            f"GameResult({self.case.describe()}; {game.winner} won: '{game.reason}', "
            f"steps ({game.lo}, {game.hi}], chunk node {game.node}, {game.moves} moves)"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints this
        printer.text(repr(self))


def load_behaviour(name: str, role: str) -> Any:
    """A built-in behaviour, "wrong-replay" (verifiers), or any "package.module:attribute"."""
    if (role, name) == (VERIFIER, WRONG_REPLAY.name):
        return WRONG_REPLAY
    return load_market_behaviour(name, role)


def build_truth(case: GameCase) -> StandinTrajectory:
    return StandinTrajectory(case.seed, case.chunks)


def build_solver_trajectory(case: GameCase) -> StandinTrajectory:
    """The true trajectory for an honest solver, a root with no state for "fake-root", else the
    trajectory departing at `solver_divergence` (or, when none is given, where the behaviour's
    own `divergence` says for this segment)."""
    if case.solver.honest:
        return build_truth(case)
    if case.solver.policy == "fake-root":
        return StandinTrajectory(case.seed, case.chunks, fake_roots=((case.end, b"\xfa" * 32),))
    divergence = case.solver_divergence or Divergence.from_pair(
        case.solver.divergence(case.start, case.end, case.segment)
    )
    return StandinTrajectory(case.seed, case.chunks, divergence, b"solver:" + _tag(case.solver))


def build_verifier_trajectory(case: GameCase) -> StandinTrajectory:
    """What the verifier claims: the truth when honest, a made-up end root for claims with no
    replay behind them, else a replay departing at `verifier_divergence` (or the behaviour's)."""
    if case.verifier.honest:
        return build_truth(case)
    if getattr(case.verifier, "claim", "replay") in UNBACKED_CLAIMS:
        made_up = ((case.end, b"\xf0" * 32),)
        return StandinTrajectory(case.seed, case.chunks, fake_roots=made_up)
    divergence = case.verifier_divergence or Divergence.from_pair(
        case.verifier.divergence(case.start, case.end, case.segment)
    )
    return StandinTrajectory(case.seed, case.chunks, divergence, b"verifier:" + _tag(case.verifier))


def _tag(behaviour: Any) -> bytes:
    return str(behaviour.name).encode()


def start_case(case: GameCase, rules: ModuleType = dispute) -> Game | None:
    """The game the verifier opens, or None when both end roots agree (no dispute)."""
    solver, verifier = build_solver_trajectory(case), build_verifier_trajectory(case)
    if solver.root(case.end) == verifier.root(case.end):
        return None
    truth = build_truth(case)
    return rules.compute_initial_game(
        game_id=compute_game_id(case.seed, 0, bytes(VERIFIER_KEY.verify_key), 0),
        solver_key=bytes(SOLVER_KEY.verify_key).hex(),
        verifier_key=bytes(VERIFIER_KEY.verify_key).hex(),
        start_step=case.start,
        start_root=truth.root(case.start).hex(),
        end_step=case.end,
        solver_root=solver.root(case.end).hex(),
        verifier_root=verifier.root(case.end).hex(),
        num_chunks=case.chunks,
        now=0,
        move_timeout=MOVE_TIMEOUT,
        arity=case.arity,
        known_roots={step: root.hex() for step, root in case.bound_roots},
    )


def play_case(
    case: GameCase, rules: ModuleType = dispute, max_moves: int = 10_000
) -> GameResult | None:
    """Play `case` to the end; None when the parties agree and no game is opened."""
    initial = start_case(case, rules)
    if initial is None:
        return None
    solver, verifier = build_solver_trajectory(case), build_verifier_trajectory(case)
    players = (
        Player(SOLVER, SOLVER_KEY, solver, case.solver.policy),
        Player(VERIFIER, VERIFIER_KEY, verifier, case.verifier.policy),
    )
    truth = build_truth(case)
    events = tuple(iterate_game(initial, *players, truth, max_moves=max_moves, rules=rules))
    final = events[-1][1] if events else initial
    return GameResult(case, initial, final, events, solver, verifier, truth)


def compute_onsets(a: StandinTrajectory, b: StandinTrajectory, lo: int, hi: int) -> list[int]:
    """The steps s in (lo, hi] where `a` and `b` agree at s - 1 and differ at s, in order. Both
    are stand-ins, so this looks only at the edges of their divergences (closed form)."""

    def differ(step: int) -> bool:
        return a.root(step) != b.root(step)

    candidates = {lo + 1}
    for trajectory in (a, b):
        divergence = Divergence.from_pair(trajectory.divergence)
        if divergence is not None:
            candidates.update(divergence.edges())
        candidates.update(step for step, _ in trajectory.fake_roots)
    return sorted(
        s for s in candidates if lo < s <= hi and differ(s) and (s == lo + 1 or not differ(s - 1))
    )


def compute_first_differing_chunk(a: StandinTrajectory, b: StandinTrajectory, step: int) -> int:
    mine, theirs = a.chunk_hashes(step), b.chunk_hashes(step)
    return next(i for i, (x, y) in enumerate(zip(mine, theirs, strict=True)) if x != y)


def replace_case(case: GameCase, **changes: Any) -> GameCase:
    return dataclasses.replace(case, **changes)
