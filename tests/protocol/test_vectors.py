"""Replays the dispute-game vectors (tests/vectors/dispute_games.json) event by event: every
intermediate state and every outcome must match, and regenerating gives the same bytes. The
primitive vectors (tests/vectors/primitives.json) are replayed by the standalone checker
(tests/vectors/independent_check.py), which must import nothing from the project."""

import ast
import json
import subprocess
import sys
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
from tests.vectors.generate import PRIMITIVES, VECTORS, generate, generate_primitives

CHECKER = Path(PRIMITIVES).with_name("independent_check.py")

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


def test_primitive_vectors_are_up_to_date():
    assert Path(PRIMITIVES).read_text() == generate_primitives()


def run_checker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECKER), *args], capture_output=True, text=True, timeout=120
    )


def test_independent_checker_replays_every_primitive():
    result = run_checker()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert sum(line.startswith("ok ") for line in result.stdout.splitlines()) == 12
    assert "ok   dispute games" in result.stdout and "ok   log entries and head" in result.stdout


def _tamper(vectors: dict, group: str) -> None:
    if group == "state":
        vectors["state"]["tensors"]["param/w"]["data"] = "00" * 24
    elif group == "sampling":
        vectors["sampling"]["verifiers"][-1]["choice"].reverse()
    elif group == "job":
        vectors["job"]["spec"]["seed"] += 1
    elif group == "requests":
        vectors["requests"][0]["idempotency_key"] = "job-2"
    elif group == "log":
        vectors["log"]["entries"][1]["postings"] = [["a", 1], ["b", -1]]
    else:
        vectors["version"] = 999


@pytest.mark.parametrize("group", ["state", "sampling", "job", "requests", "log", "version"])
def test_independent_checker_rejects_a_tampered_file(tmp_path, group):
    vectors = json.loads(Path(PRIMITIVES).read_text())
    _tamper(vectors, group)
    tampered = tmp_path / "primitives.json"
    tampered.write_text(json.dumps(vectors))
    result = run_checker(str(tampered))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout


GAME_TAMPERING = {
    "a posted root": lambda case: case["events"][0]["move"]["payload"]["roots"].__setitem__(
        0, "11" * 32
    ),
    "the recorded winner": lambda case: case["outcome"].__setitem__("winner", "solver"),
    "a state after a move": lambda case: case["events"][1]["after"].__setitem__("lo", 3),
}


@pytest.mark.parametrize("change", sorted(GAME_TAMPERING))
def test_independent_checker_rejects_a_tampered_game(tmp_path, change):
    """The checker replays the game itself: a forged move fails its signature, a changed
    outcome or state disagrees with the replay."""
    games = json.loads(Path(VECTORS).read_text())
    GAME_TAMPERING[change](games["cases"][0])
    tampered = tmp_path / "dispute_games.json"
    tampered.write_text(json.dumps(games))
    result = run_checker(str(PRIMITIVES), str(tampered))
    assert result.returncode == 1 and "FAIL dispute games" in result.stdout, result.stdout


def test_independent_checker_imports_only_stdlib_and_nacl():
    allowed = {"hashlib", "json", "struct", "sys", "pathlib", "nacl"}
    tree = ast.parse(CHECKER.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            raise AssertionError("no dynamic imports")
    assert imported <= allowed, imported - allowed
