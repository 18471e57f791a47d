"""Writes tests/vectors/dispute_games.json: deterministic dispute games (set-up, every event in
order, the game state after each, the outcome) so another implementation can check itself.

Run: python3 tests/vectors/generate.py     (tests/protocol/test_vectors.py replays the file and
checks that regenerating gives the same bytes)
"""

import json
import sys
from pathlib import Path

from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from protocol.dispute import (  # noqa: E402
    OVER,
    RULING,
    SOLVER,
    STATE,
    VERIFIER,
    IllegalMove,
    compute_initial_game,
    process_deadline,
    process_move,
    process_ruling,
    process_state_supplied,
)
from protocol.standin import Player, StandinTrajectory  # noqa: E402

VECTORS = Path(__file__).with_name("dispute_games.json")
SOLVER_SEED, VERIFIER_SEED = b"\x01" * 32, b"\x02" * 32

# name, start, length, chunks, arity, solver divergence, solver policy, verifier divergence, verifier policy
CASES = [
    ("honest-verifier-catches-perturbed-chunk", 0, 20, 8, 2, (8, 3), "follow", None, "follow"),
    ("cheat-from-first-step-all-chunks", 100, 1000, 64, 2, (101, None), "follow", None, "follow"),
    ("kary-4-bisection", 0, 1000, 16, 4, (517, 9), "follow", None, "follow"),
    ("frivolous-verifier-times-out", 0, 16, 4, 2, None, "follow", "fake", "follow"),
    ("wrong-verifier-loses-at-referee", 40, 10, 5, 2, None, "follow", (45, 2), "follow"),
    ("solver-no-show", 0, 8, 4, 2, (3, 0), "no-show", None, "follow"),
    ("one-step-segment-one-chunk", 7, 1, 1, 2, (8, 0), "follow", None, "follow"),
]


def _trajectory(seed: bytes, chunks: int, divergence, tag: bytes, end: int) -> StandinTrajectory:
    if divergence == "fake":
        return StandinTrajectory(seed, chunks, fake_roots=((end, b"\xf0" * 32),))
    return StandinTrajectory(seed, chunks, divergence, tag)


def generate_case(name, start, length, chunks, arity, s_div, s_policy, v_div, v_policy) -> dict:
    seed, end = name.encode()[:8].ljust(8, b"."), start + length
    truth = StandinTrajectory(seed, chunks)
    mine = _trajectory(seed, chunks, s_div, b"solver", end)
    theirs = _trajectory(seed, chunks, v_div, b"verifier", end)
    keys = SigningKey(SOLVER_SEED), SigningKey(VERIFIER_SEED)
    game = compute_initial_game(
        game_id=seed.hex() * 4,
        solver_key=bytes(keys[0].verify_key).hex(),
        verifier_key=bytes(keys[1].verify_key).hex(),
        start_step=start,
        start_root=truth.root(start).hex(),
        end_step=end,
        solver_root=mine.root(end).hex(),
        verifier_root=theirs.root(end).hex(),
        num_chunks=chunks,
        now=0,
        move_timeout=10,
        arity=arity,
    )
    players = {
        SOLVER: Player(SOLVER, keys[0], mine, s_policy),
        VERIFIER: Player(VERIFIER, keys[1], theirs, v_policy),
    }
    initial, events = game.to_json(), []
    for now in range(1, 10_000):
        if game.phase == OVER:
            break
        if game.phase == STATE:
            event = {"event": "state_supplied", "now": now}
            game = process_state_supplied(game, now)
        elif game.phase == RULING:
            chunk_hash = truth.chunk_hashes(game.hi)[game.chunk]
            event = {"event": "ruling", "chunk_hash": chunk_hash.hex()}
            game = process_ruling(game, chunk_hash)
        else:
            move = players[game.turn].next_move(game)
            game, event = _apply_or_time_out(game, move, now)
        events.append({**event, "after": game.to_json()})
    return {
        "name": name,
        "initial": initial,
        "events": events,
        "outcome": {
            "winner": game.winner,
            "reason": game.reason,
            "step": game.lo,
            "chunk": game.chunk if game.node[1] - game.node[0] == 1 else None,
            "moves": game.moves,
        },
    }


def _apply_or_time_out(game, move, now: int) -> tuple:
    """The move and its event, or — when the party has no legal move — its clock running out."""
    if move is not None:
        try:
            return process_move(game, move, now), {
                "event": "move",
                "now": now,
                "move": move.to_json(),
            }
        except IllegalMove:
            pass
    return process_deadline(game, game.deadline), {"event": "deadline", "now": game.deadline}


def generate() -> str:
    cases = [generate_case(*case) for case in CASES]
    return (
        json.dumps(
            {"format": "veritrain-dispute-vectors-v1", "cases": cases}, indent=1, sort_keys=True
        )
        + "\n"
    )


if __name__ == "__main__":
    VECTORS.write_text(generate())
    print(f"wrote {VECTORS}")
