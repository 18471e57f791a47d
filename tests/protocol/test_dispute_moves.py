"""Illegal, late and equivocating moves: typed errors naming the party, the game unchanged."""

import json

import pytest
from nacl.signing import SigningKey

from protocol.dispute import (
    CHUNKS,
    OVER,
    SOLVER,
    STEPS,
    TRANSITIONS,
    VERIFIER,
    Game,
    IllegalMove,
    Move,
    compute_initial_game,
    process_deadline,
    process_move,
    process_ruling,
    sign_move,
)
from protocol.errors import InvalidInput
from protocol.standin import Player, StandinTrajectory

SOLVER_KEY, VERIFIER_KEY, OTHER_KEY = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
TRUTH = StandinTrajectory(b"seed", 8)
CHEAT = StandinTrajectory(b"seed", 8, (13, 5))


def new_game(known_roots=None, length=100, arity=2, cheat=CHEAT) -> Game:
    return compute_initial_game(
        game_id="ab" * 32,
        solver_key=bytes(SOLVER_KEY.verify_key).hex(),
        verifier_key=bytes(VERIFIER_KEY.verify_key).hex(),
        start_step=0,
        start_root=TRUTH.root(0).hex(),
        end_step=length,
        solver_root=cheat.root(length).hex(),
        verifier_root=TRUTH.root(length).hex(),
        num_chunks=8,
        now=0,
        move_timeout=10,
        arity=arity,
        known_roots=known_roots,
    )


def solver_move(game: Game) -> Move:
    return Player(SOLVER, SOLVER_KEY, CHEAT).next_move(game)


def assert_refused(game: Game, move: Move, party: str, now: int = 1, words: str = "") -> None:
    before = json.dumps(game.to_json(), sort_keys=True)
    with pytest.raises(IllegalMove) as refused:
        process_move(game, move, now)
    assert refused.value.party == party and words in str(refused.value)
    assert json.dumps(game.to_json(), sort_keys=True) == before


def test_the_transition_table_is_data_and_names_every_party_move():
    assert TRANSITIONS[(STEPS, SOLVER)] == {"dissect"}
    assert TRANSITIONS[(CHUNKS, VERIFIER)] == {"pick"}


def test_out_of_turn_wrong_kind_and_wrong_round_are_refused():
    game = new_game()
    verifier_move = sign_move(
        VERIFIER_KEY, game, party=VERIFIER, kind="choose", payload={"index": 0, "root": "11" * 32}
    )
    assert_refused(game, verifier_move, VERIFIER, words="may not")
    pick = sign_move(
        SOLVER_KEY, game, party=SOLVER, kind="pick", payload={"left": "00" * 32, "right": "00" * 32}
    )
    assert_refused(game, pick, SOLVER, words="may not")
    good = solver_move(game)
    stale = Move(good.party, good.kind, good.round + 1, good.payload, good.signature)
    assert_refused(game, stale, SOLVER, words="round")


def test_forged_and_replayed_signatures_are_refused():
    game = new_game()
    good = solver_move(game)
    forged = sign_move(OTHER_KEY, game, party=SOLVER, kind="dissect", payload=good.payload)
    assert_refused(game, forged, SOLVER, words="signed")
    tampered = Move(SOLVER, "dissect", good.round, {"roots": ["22" * 32]}, good.signature)
    assert_refused(game, tampered, SOLVER, words="signed")
    moved = process_move(game, good, 1)
    replay = Move(SOLVER, "dissect", moved.round, good.payload, good.signature)  # old signature
    assert_refused(moved, replay, SOLVER)


@pytest.mark.parametrize(
    "payload",
    [{}, {"roots": []}, {"roots": ["zz" * 32]}, {"roots": [1]}, {"roots": ["00" * 32, "00" * 32]}],
)
def test_malformed_dissections_are_refused(payload):
    game = new_game()
    assert_refused(
        game, sign_move(SOLVER_KEY, game, party=SOLVER, kind="dissect", payload=payload), SOLVER
    )


def test_a_verifier_cannot_agree_then_dispute_or_change_its_claim():
    game = process_move(new_game(), solver_move(new_game()), 1)
    mid = game.points[0]
    agree = sign_move(
        VERIFIER_KEY,
        game,
        party=VERIFIER,
        kind="choose",
        payload={"index": 0, "root": game.roots[mid]},
    )
    assert_refused(game, agree, VERIFIER, 2, "agreement")
    flip = sign_move(
        VERIFIER_KEY, game, party=VERIFIER, kind="choose", payload={"index": 1, "root": "33" * 32}
    )
    assert_refused(game, flip, VERIFIER, 2, "another root")
    out_of_range = sign_move(
        VERIFIER_KEY, game, party=VERIFIER, kind="choose", payload={"index": 2, "root": "33" * 32}
    )
    assert_refused(game, out_of_range, VERIFIER, 2, "sub-intervals")


def test_children_must_open_the_claim():
    game = new_game(
        length=1, cheat=StandinTrajectory(b"seed", 8, (1, 5))
    )  # one step: straight to the chunk tree
    assert game.phase == CHUNKS
    bogus = sign_move(
        SOLVER_KEY,
        game,
        party=SOLVER,
        kind="split",
        payload={"left": "44" * 32, "right": "55" * 32},
    )
    assert_refused(game, bogus, SOLVER, words="do not hash")


def test_late_moves_are_refused_and_the_late_party_loses():
    game = new_game()
    assert_refused(game, solver_move(game), SOLVER, now=game.deadline, words="deadline")
    assert process_deadline(game, game.deadline - 1) == game
    ended = process_deadline(game, game.deadline)
    assert (ended.phase, ended.winner) == (OVER, VERIFIER)
    waiting_verifier = process_move(game, solver_move(game), 1)
    ended = process_deadline(waiting_verifier, waiting_verifier.deadline)
    assert (ended.winner, ended.reason) == (SOLVER, "verifier missed its deadline")


def test_equivocation_against_a_bound_root_loses_at_once():
    bound = {50: "66" * 32}  # the solver answered this root for step 50 in another game
    game = new_game(known_roots=bound)
    ended = process_move(game, solver_move(game), 1)  # its trajectory says otherwise at step 50
    assert (ended.phase, ended.winner, ended.extra["equivocation_step"]) == (OVER, VERIFIER, 50)


def test_moves_after_the_end_and_rulings_out_of_phase_are_refused():
    ended = process_deadline(new_game(), 10**9)
    assert_refused(ended, solver_move(new_game()), SOLVER, words="over")
    with pytest.raises(IllegalMove):
        process_ruling(new_game(), b"\x00" * 32)


def test_games_round_trip_through_json():
    game = process_move(new_game(arity=4), solver_move(new_game(arity=4)), 1)
    assert Game.from_json(json.loads(json.dumps(game.to_json()))) == game
    move = solver_move(new_game())
    assert Move.from_json(json.loads(json.dumps(move.to_json()))) == move
    with pytest.raises(IllegalMove):
        Move.from_json({"party": "solver", "kind": "dissect"})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"arity": 1}, "arity"),
        ({"end_step": 0}, "end_step"),
        ({"end_step": -5}, "end_step"),
        ({"num_chunks": 0}, "num_chunks"),
        ({"verifier_root": CHEAT.root(100).hex()}, "verifier_root"),
    ],
)
def test_a_game_that_cannot_be_set_up_is_invalid_input_naming_the_field(change, field):
    set_up = dict(
        game_id="ab" * 32,
        solver_key=bytes(SOLVER_KEY.verify_key).hex(),
        verifier_key=bytes(VERIFIER_KEY.verify_key).hex(),
        start_step=0,
        start_root=TRUTH.root(0).hex(),
        end_step=100,
        solver_root=CHEAT.root(100).hex(),
        verifier_root=TRUTH.root(100).hex(),
        num_chunks=8,
        now=0,
        move_timeout=10,
    )
    compute_initial_game(**set_up)  # the unchanged set-up is a game
    with pytest.raises(InvalidInput) as caught:
        compute_initial_game(**{**set_up, **change})
    assert caught.value.field == field


def test_set_up_and_signing_take_keywords_only():
    with pytest.raises(TypeError):
        compute_initial_game("ab" * 32, "00", "11", 0, "22", 10, "33", "44", 8, 0, 10)
    with pytest.raises(TypeError):
        sign_move(SOLVER_KEY, new_game(), SOLVER, "dissect", {"roots": []})
