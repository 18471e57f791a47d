"""Playing a dispute over HTTP: read the game, make this party's move, supply the agreed state.

Shared by the solver and verifier daemons (and tests). The moves themselves come from
`protocol.standin.Player`, which answers from any trajectory — here a replayed segment's trace.
"""

from collections.abc import Callable

from protocol.dispute import RULING, SOLVER, STATE, Game
from protocol.standin import Player
from sdk.client import CoordinatorClient, CoordinatorError


def get_game(view: dict) -> Game:
    return Game.from_json(view["state"]["game"])


def play_turn(client: CoordinatorClient, view: dict, player: Player,
              agreed_state: Callable[[int], bytes] | None = None) -> dict | None:
    """Make this party's move if it is its turn; returns the new view, or None if nothing was
    owed. `agreed_state(step)` gives the solver's state bytes when the referee needs them."""
    if view["status"] != "open":
        return None
    game = get_game(view)
    if game.phase == STATE and player.party == SOLVER and agreed_state is not None:
        return client.upload_dispute_state(view["id"], agreed_state(game.lo))
    if game.phase == RULING:
        return client.rule_dispute(view["id"])
    move = player.next_move(game)
    if move is None:
        return None
    try:
        return client.post_dispute_move(view["id"], move.to_json())
    except CoordinatorError as err:
        if err.status == 409 and err.problem_code in ("illegal_move", "invalid_state"):
            return None  # someone (a restarted twin of us) moved first, or the game moved on
        raise


def play_until_idle(client: CoordinatorClient, dispute_id: int, player: Player,
                    agreed_state: Callable[[int], bytes] | None = None, max_turns: int = 10_000) -> dict:
    """Keep moving while it is this party's turn; returns the latest view."""
    view = client.get_dispute(dispute_id)
    for _ in range(max_turns):
        moved = play_turn(client, view, player, agreed_state)
        if moved is None:
            return view
        view = moved
    return view
