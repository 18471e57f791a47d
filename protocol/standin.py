"""A cheap stand-in for the training program, and players that drive the dispute game with it.

A stand-in state is its list of chunk leaf hashes, given in closed form for any step (no chain
to compute), so games over trajectories of 10^6 steps play in milliseconds. A behaviour's
`divergence` says where its trajectory departs from the true one: from that step on its chunks
differ (only the named chunk at the first bad step, every chunk after it: errors spread).

The same `Player` logic answers a real game too: it only needs a `Trajectory` (`root(step)`,
`chunk_hashes(step)`), which a solver or verifier daemon builds from a replayed segment.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from protocol import dispute
from protocol.dispute import (
    CHUNKS,
    OVER,
    RULING,
    SOLVER,
    STATE,
    STEPS,
    VERIFIER,
    Game,
    Move,
    compute_child_ranges,
    compute_dissection_points,
    sign_move,
)
from protocol.errors import InternalError, InvalidInput
from protocol.merkle import compute_subtree_root, root_from_leaf_hashes


class Trajectory(Protocol):
    def root(self, step: int) -> bytes: ...

    def chunk_hashes(self, step: int) -> list[bytes]: ...


ChunkRange = tuple[int, int]  # [first, end) chunk indices


@dataclass(frozen=True)
class Divergence:
    """Where a trajectory departs from the true one: at `first_step` the chunks in `first_chunks`
    differ (None: all), on later steps those in `later_chunks` (None: all: errors spread), until
    `last_step` (None: to the end; after it the state is the true one again)."""

    first_step: int
    last_step: int | None = None
    first_chunks: ChunkRange | None = None
    later_chunks: ChunkRange | None = None

    @classmethod
    def from_pair(cls, pair: "tuple[int, int | None] | Divergence | None") -> "Divergence | None":
        """A behaviour's `(first bad step, chunk or None)`: that chunk first, then everything."""
        if pair is None or isinstance(pair, Divergence):
            return pair
        step, chunk = pair
        return cls(step, None, None if chunk is None else (chunk, chunk + 1))

    def is_bad(self, step: int, chunk: int) -> bool:
        if step < self.first_step or (self.last_step is not None and step > self.last_step):
            return False
        chunks = self.first_chunks if step == self.first_step else self.later_chunks
        return chunks is None or chunks[0] <= chunk < chunks[1]

    def edges(self) -> tuple[int, ...]:
        """The steps where being wrong may switch on or off (onsets lie among them)."""
        ends = () if self.last_step is None else (self.last_step + 1,)
        return (self.first_step, self.first_step + 1, *ends)


@dataclass(frozen=True)
class StandinTrajectory:
    seed: bytes
    num_chunks: int
    # a Divergence, or a behaviour's (first bad step, chunk or None = all); None: the true one
    divergence: "Divergence | tuple[int, int | None] | None" = None
    tag: bytes = b"bad"  # different cheats compute different wrong states
    fake_roots: tuple[tuple[int, bytes], ...] = ()  # roots with no state behind them

    def _chunk(self, step: int, index: int) -> bytes:
        divergence = Divergence.from_pair(self.divergence)
        bad = divergence is not None and divergence.is_bad(step, index)
        prefix = b"VTSTANDIN" + (self.tag if bad else b"true")
        return hashlib.sha256(
            prefix + self.seed + step.to_bytes(8, "little") + index.to_bytes(4, "little")
        ).digest()

    def chunk_hashes(self, step: int) -> list[bytes]:
        return [self._chunk(step, i) for i in range(self.num_chunks)]

    def root(self, step: int) -> bytes:
        return dict(self.fake_roots).get(step) or root_from_leaf_hashes(self.chunk_hashes(step))


def compute_first_divergence(
    mine: Trajectory, theirs: Trajectory, lo: int, hi: int
) -> tuple[int, int]:
    """(first step in (lo, hi] whose root differs, first differing chunk there) — a linear scan,
    for tests on short trajectories. Two trajectories with no such step and chunk are not a
    dispute: InvalidInput."""
    for step in range(lo + 1, hi + 1):
        if mine.root(step) != theirs.root(step):
            a, b = mine.chunk_hashes(step), theirs.chunk_hashes(step)
            chunk = next(
                (i for i in range(max(len(a), len(b))) if a[i : i + 1] != b[i : i + 1]), None
            )
            if chunk is None:  # a fake root: no chunk behind it differs
                raise InvalidInput(f"the roots at step {step} differ but no chunk does", "theirs")
            return step, chunk
    raise InvalidInput(f"the trajectories agree on every step in ({lo}, {hi}]", "theirs")


@dataclass
class Player:
    """Answers the game from its own trajectory; `policy` (a behaviour's) makes it cheat at the game
    level: "no-show" never moves, "equivocate" contradicts a bound root; any other follows."""

    party: str
    key: Any  # nacl SigningKey
    trajectory: Trajectory
    policy: str = "follow"

    def next_move(self, game: Game) -> Move | None:
        """The move to make now, or None (no-show / cannot make a legal move)."""
        if self.policy == "no-show" or game.turn != self.party:
            return None
        if game.phase == STEPS:
            return self._dissect(game) if self.party == SOLVER else self._choose(game)
        if game.phase == CHUNKS:
            return self._children(game, "split" if self.party == SOLVER else "pick")
        return None

    def _dissect(self, game: Game) -> Move:
        points = compute_dissection_points(game.lo, game.hi, game.arity)
        roots = [self.trajectory.root(p).hex() for p in points]
        if self.policy == "equivocate":  # contradict the first root it already bound itself to
            bound = [i for i, p in enumerate(points) if p in game.roots]
            roots[bound[0] if bound else 0] = "00" * 32
        return sign_move(self.key, game, party=SOLVER, kind="dissect", payload={"roots": roots})

    def _choose(self, game: Game) -> Move:
        bounds = (game.lo, *game.points, game.hi)
        for index in range(len(bounds) - 1):
            end = bounds[index + 1]
            mine = self.trajectory.root(end).hex()
            if mine != game.roots[end]:
                return sign_move(
                    self.key,
                    game,
                    party=VERIFIER,
                    kind="choose",
                    payload={"index": index, "root": mine},
                )
        return None  # it agrees with everything: it cannot dispute, and will lose on time

    def _children(self, game: Game, kind: str) -> Move | None:
        hashes = self.trajectory.chunk_hashes(game.hi)
        left, right = compute_child_ranges(game.node)
        payload = {
            "left": compute_subtree_root(hashes, *left).hex(),
            "right": compute_subtree_root(hashes, *right).hex(),
        }
        return sign_move(self.key, game, party=self.party, kind=kind, payload=payload)


def iterate_game(
    game: Game,
    solver: Player,
    verifier: Player,
    truth: Trajectory,
    *,
    max_moves: int = 10_000,
    rules: ModuleType = dispute,
) -> Iterator[tuple[dict[str, Any], Game]]:
    """Drive a game to its end, yielding (event, game after it) for every event: parties move (a
    party that cannot or will not is timed out), the solver supplies the agreed state unless it
    is a no-show, the referee rules from `truth`. `rules` is the game module (a modified copy of
    `protocol.dispute` plays the same way, which is how broken rules are tested)."""
    for now in range(1, max_moves + 1):
        if game.phase == OVER:
            return
        if game.phase == STATE:
            if solver.policy == "no-show":
                event = {"event": "deadline", "now": game.deadline}
                game = rules.process_deadline(game, game.deadline)
            else:
                event = {"event": "state_supplied", "now": now}
                game = rules.process_state_supplied(game, now)
        elif game.phase == RULING:
            chunk_hash = truth.chunk_hashes(game.hi)[game.chunk]
            event = {"event": "ruling", "chunk_hash": chunk_hash.hex()}
            game = rules.process_ruling(game, chunk_hash)
        else:
            player = solver if game.turn == SOLVER else verifier
            game, event = _apply_or_time_out(game, player.next_move(game), now, rules)
        yield event, game
    # Every game ends within compute_rounds_bound moves plus its deadlines: this is our bug.
    raise InternalError(f"the game did not end within {max_moves} events")


def play_game(
    game: Game,
    solver: Player,
    verifier: Player,
    truth: Trajectory,
    *,
    max_moves: int = 10_000,
    rules: ModuleType = dispute,
) -> Game:
    """The game at its end (see `iterate_game`)."""
    final = game
    for _event, final in iterate_game(  # noqa: B007 -- the last game is the answer
        game, solver, verifier, truth, max_moves=max_moves, rules=rules
    ):
        pass
    return final


def _apply_or_time_out(
    game: Game, move: Move | None, now: int, rules: ModuleType
) -> tuple[Game, dict[str, Any]]:
    """The move and its event, or — when the party has no legal move (a no-show, a fake root it
    cannot open) — its clock running out."""
    if move is not None:
        try:
            return rules.process_move(game, move, now), {
                "event": "move",
                "now": now,
                "move": move.to_json(),
            }
        except rules.IllegalMove:
            pass  # rejected, game unchanged: the party could retry, but this one has nothing legal
    return rules.process_deadline(game, game.deadline), {"event": "deadline", "now": game.deadline}


@dataclass(frozen=True)
class TraceTrajectory:
    """A replayed segment's chunk hashes by step (a real trajectory, for a player or a test)."""

    chunks_by_step: dict[int, list[bytes]]

    def chunk_hashes(self, step: int) -> list[bytes]:
        return self.chunks_by_step[step]

    def root(self, step: int) -> bytes:
        return root_from_leaf_hashes(self.chunks_by_step[step])
