"""Playing a dispute over HTTP: read the game, make this party's move, supply the agreed state.

Shared by the solver and verifier daemons (and tests). The moves themselves come from
`protocol.standin.Player`, which answers from any trajectory — here a replayed segment's trace.
"""

from collections.abc import Callable
from pathlib import Path

from protocol.dispute import RULING, SOLVER, STATE, Game, IllegalMove
from protocol.standin import Player
from protocol.wire import DisputeStatus, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.responses import DisputeView

# A move refused for these reasons lost a race (a restarted twin of us moved first, or the game
# moved on): nothing to do. Any other refusal is a real error.
_RACE_CODES = (ProblemCode.INVALID_STATE, IllegalMove.code)


def get_game(view: DisputeView) -> Game:
    return Game.from_json(view.game_json)


def play_turn(
    client: CoordinatorClient,
    view: DisputeView,
    player: Player,
    agreed_state: Callable[[int], Path] | None = None,
) -> DisputeView | None:
    """Make this party's move if it is its turn; returns the new view, or None if nothing was
    owed. `agreed_state(step)` names the solver's state file when the referee needs it."""
    if view.status != DisputeStatus.OPEN:
        return None
    game = get_game(view)
    if game.phase == STATE and player.party == SOLVER and agreed_state is not None:
        return client.upload_dispute_state_file(view.id, agreed_state(game.lo))
    if game.phase == RULING:
        return client.rule_dispute(view.id)
    move = player.next_move(game)
    if move is None:
        return None
    try:
        return client.post_dispute_move(view.id, move.to_json())
    except CoordinatorError as err:
        if err.status == 409 and err.problem_code in _RACE_CODES:
            return None
        raise


def play_until_idle(
    client: CoordinatorClient,
    dispute_id: int,
    player: Player,
    agreed_state: Callable[[int], Path] | None = None,
    max_turns: int = 10_000,
) -> DisputeView:
    """Keep moving while it is this party's turn; returns the latest view."""
    view = client.get_dispute(dispute_id)
    for _ in range(max_turns):
        moved = play_turn(client, view, player, agreed_state)
        if moved is None:
            return view
        view = moved
    return view
