"""Replays the dispute-game vectors (tests/vectors/dispute_games.json) event by event: every
intermediate state and every outcome must match, and regenerating gives the same bytes."""

import json
from pathlib import Path

import pytest

from protocol.dispute import (
    Game,
    Move,
    process_deadline,
    process_move,
    process_ruling,
    process_state_supplied,
)
from tests.vectors.generate import VECTORS, generate

CASES = json.loads(Path(VECTORS).read_text())["cases"]


def apply(game: Game, event: dict) -> Game:
    kind = event["event"]
    if kind == "move":
        return process_move(game, Move.from_json(event["move"]), event["now"])
    if kind == "deadline":
        return process_deadline(game, event["now"])
    if kind == "state_supplied":
        return process_state_supplied(game, event["now"])
    return process_ruling(game, bytes.fromhex(event["chunk_hash"]))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_replays_exactly(case):
    game = Game.from_json(case["initial"])
    for event in case["events"]:
        game = apply(game, event)
        assert game.to_json() == Game.from_json(event["after"]).to_json()
    outcome = case["outcome"]
    assert (game.winner, game.reason, game.lo, game.moves) == (
        outcome["winner"],
        outcome["reason"],
        outcome["step"],
        outcome["moves"],
    )


def test_vectors_are_up_to_date():
    assert Path(VECTORS).read_text() == generate()
