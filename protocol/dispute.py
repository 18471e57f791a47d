"""The dispute game: two-level Merkle bisection between a solver and a verifier (pure).

A verifier disagrees with the solver's root at the end `b` of a segment whose start `a` both
accept. Play, as a transition table (`TRANSITIONS`):

1. steps:  the solver posts its state roots at the k-1 dissection points of (lo, hi); the verifier
   names the first sub-interval it disputes, with its own root at that interval's end. Repeat
   until hi = lo + 1: the dispute is one training step s = lo → s + 1.
2. chunks: over the RFC 9162 tree of the state at s + 1 (chunk leaves, `protocol.state`), the
   solver posts the two child hashes of the current node (they must hash to its claim); the
   verifier posts its own two (they must hash to its claim) and the first differing child becomes
   the node. Repeat down to one chunk c.
3. state:  the solver owes the agreed state at s (the caller checks it against its root and
   calls `process_state_supplied`; when s is the segment start the caller already holds it);
4. ruling: the referee recomputes step s + 1 and compares chunk c with both claims
   (`protocol.referee`); `process_ruling` ends the game. The ruling has a deadline too: when the
   referee cannot rule, `process_ruling_failed` ends the game by `RULING_FAILURE`.

Every move is signed by its party over (game id, round, kind, payload) under
`DOMAIN_DISPUTE_MOVE`, must come before the deadline and from the party whose turn it is. An
illegal move raises `IllegalMove` naming the party and leaves the game unchanged (it can still
move legally before the deadline); a missed deadline loses (`process_deadline`). A solver that
posts a root for a step different from one it bound itself to earlier (`known_roots`: other games
of the same job, its commitment) has equivocated and loses at once.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import InvalidInput, PartyFault
from protocol.merkle import compute_node_hash
from protocol.signing import DOMAIN_DISPUTE_MOVE, is_valid_signature, sign

SOLVER, VERIFIER, REFEREE = "solver", "verifier", "referee"
STEPS, CHUNKS, STATE, RULING, OVER = "steps", "chunks", "state", "ruling", "over"

# (phase, party to move) -> the move kinds it may make. Everything else is illegal.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (STEPS, SOLVER): frozenset({"dissect"}),
    (STEPS, VERIFIER): frozenset({"choose"}),
    (CHUNKS, SOLVER): frozenset({"split"}),
    (CHUNKS, VERIFIER): frozenset({"pick"}),
}
# Not moves but caller events: the agreed state at s arrives (the solver owes it; its bytes are
# checked against the agreed root by the caller) -> `process_state_supplied`; the referee's
# recomputed chunk -> `process_ruling`.
# Who loses when the deadline passes in each phase. The referee's own deadline (the ruling
# phase) is not a party's to miss: see RULING_FAILURE below.
LATE_LOSER = {
    (STEPS, SOLVER): SOLVER,
    (STEPS, VERIFIER): VERIFIER,
    (CHUNKS, SOLVER): SOLVER,
    (CHUNKS, VERIFIER): VERIFIER,
    (STATE, SOLVER): SOLVER,
}

# Why the referee could not rule (its attempts failed, or the ruling deadline passed) -> (winner,
# no_fault, reason). A state the training program cannot step is its supplier's fault: the
# solver's, who owes every state (the segment's start checkpoint too) and bound itself to its
# root. The referee's own failure (a bug, a crash, a timeout) is neither party's: nobody is
# slashed (`process_ruling_failed`; the caller returns stakes and escrow).
STATE_FAULT, REFEREE_FAULT = "state", "referee"
RULING_FAILURE: dict[str, tuple[str | None, bool, str]] = {
    STATE_FAULT: (VERIFIER, False, "the referee cannot step the agreed state: its supplier loses"),
    REFEREE_FAULT: (None, True, "the referee failed to rule: neither party is at fault"),
}

MOVE_FIELDS = {"party", "kind", "round", "payload", "signature"}
MAX_ROUND = 2**31


class IllegalMove(PartyFault):
    """A move the game does not allow now; the game is unchanged."""

    code = "illegal_move"


@dataclass(frozen=True)
class Move:
    party: str
    kind: str
    round: int
    payload: dict[str, Any]
    signature: str  # hex ed25519 over compute_move_message, DOMAIN_DISPUTE_MOVE

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> "Move":
        """A move from a peer's JSON; anything but the exact field types is an IllegalMove."""
        if not isinstance(obj, dict) or set(obj) != MOVE_FIELDS:
            raise IllegalMove("unknown", "a move is {party, kind, round, payload, signature}")
        party = obj["party"] if isinstance(obj["party"], str) else "unknown"
        for name, kind in (("party", str), ("kind", str), ("payload", dict), ("signature", str)):
            if not isinstance(obj[name], kind):
                raise IllegalMove(party, f"malformed move: {name} must be a {kind.__name__}")
        round_ = obj["round"]
        # bool is an int and 1e400 a float: only a real integer in range is a round
        if type(round_) is not int or not 0 <= round_ <= MAX_ROUND:
            raise IllegalMove(party, f"malformed move: round must be an integer in 0..{MAX_ROUND}")
        return cls(party, obj["kind"], round_, dict(obj["payload"]), obj["signature"])


@dataclass(frozen=True)
class Game:
    game_id: str  # hex: binds signatures to this one dispute
    solver_key: str
    verifier_key: str
    arity: int
    move_timeout: int
    num_chunks: int
    phase: str
    turn: str | None
    deadline: int
    round: int
    lo: int  # steps: agreed root at lo ...
    hi: int  # ... disputed root at hi
    roots: dict[int, str]  # every root the solver bound itself to, by step
    verifier_roots: dict[int, str]
    points: tuple[int, ...] = ()  # dissection points awaiting the verifier's choice
    node: tuple[int, int] = (0, 0)  # chunks: [start, end) of the disputed subtree
    node_hashes: tuple[str, str] = ("", "")  # (solver's, verifier's) hash of that subtree
    split: tuple[str, str] = ("", "")  # the solver's children of the node, awaiting the pick
    winner: str | None = None
    reason: str = ""
    moves: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # ruling details
    trail: tuple[
        tuple[str, int, int], ...
    ] = ()  # how it narrowed: ("steps", lo, hi) / ("chunks", a, b)

    @property
    def step(self) -> int:
        """The disputed step s (meaningful once the step phase is over)."""
        return self.lo

    @property
    def chunk(self) -> int:
        return self.node[0]

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        obj["roots"] = {str(k): v for k, v in self.roots.items()}
        obj["verifier_roots"] = {str(k): v for k, v in self.verifier_roots.items()}
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Game":
        obj = dict(obj)
        obj["roots"] = {int(k): v for k, v in obj["roots"].items()}
        obj["verifier_roots"] = {int(k): v for k, v in obj["verifier_roots"].items()}
        for name in ("points", "node", "node_hashes", "split"):
            obj[name] = tuple(obj[name])
        obj["trail"] = tuple(tuple(t) for t in obj.get("trail", ()))
        return cls(**obj)


# --- set-up ------------------------------------------------------------------------------------


def compute_game_id(job_id: bytes, segment: int, verifier_key: bytes, opened_at: int) -> str:
    return hashlib.sha256(
        b"VTGAME1"
        + job_id
        + segment.to_bytes(8, "little")
        + verifier_key
        + opened_at.to_bytes(8, "little")
    ).hexdigest()


def compute_initial_game(
    *,
    game_id: str,
    solver_key: str,
    verifier_key: str,
    start_step: int,
    start_root: str,
    end_step: int,
    solver_root: str,
    verifier_root: str,
    num_chunks: int,
    now: int,
    move_timeout: int,
    arity: int = 2,
    known_roots: dict[int, str] | None = None,
) -> Game:
    """The game over a segment (start_step, end_step] whose end the verifier disputes; raises
    InvalidInput naming the first field that cannot make a game."""
    _validate_set_up(
        start_step=start_step,
        end_step=end_step,
        solver_root=solver_root,
        verifier_root=verifier_root,
        num_chunks=num_chunks,
        arity=arity,
    )
    roots = {**(known_roots or {}), start_step: start_root, end_step: solver_root}
    game = Game(
        game_id,
        solver_key,
        verifier_key,
        arity,
        move_timeout,
        num_chunks,
        STEPS,
        SOLVER,
        now + move_timeout,
        0,
        start_step,
        end_step,
        roots,
        {start_step: start_root, end_step: verifier_root},
    )
    return _enter_chunks_if_one_step(game)


def _validate_set_up(
    *,
    start_step: int,
    end_step: int,
    solver_root: str,
    verifier_root: str,
    num_chunks: int,
    arity: int,
) -> None:
    # The caller's set-up, not a party's move: InvalidInput, never a PartyFault (nobody is slashed).
    if arity < 2:
        raise InvalidInput("a dissection needs at least 2 parts", "arity")
    if end_step <= start_step:
        raise InvalidInput(f"the segment must end after its start (step {start_step})", "end_step")
    if num_chunks < 1:
        raise InvalidInput("a state has at least one chunk", "num_chunks")
    if solver_root == verifier_root:
        raise InvalidInput("equals the solver's root: there is nothing to dispute", "verifier_root")


def compute_dissection_points(lo: int, hi: int, arity: int) -> tuple[int, ...]:
    """The distinct interior points splitting (lo, hi) into at most `arity` near-equal parts."""
    span = hi - lo
    return tuple(sorted({lo + span * i // arity for i in range(1, arity)} - {lo, hi}))


def compute_rounds_bound(steps: int, num_chunks: int, arity: int = 2) -> int:
    """Moves a full game can take: two per step round and per chunk level, plus the state."""
    step_rounds = 0
    while steps > 1:
        steps = -(-steps // arity)
        step_rounds += 1
    return 2 * step_rounds + 2 * max(0, (num_chunks - 1).bit_length()) + 1


def compute_dispute_stall_bound_s(
    segment_steps: int,
    num_chunks: int,
    move_timeout_s: float,
    ruling_timeout_s: float,
    referee_attempts: int,
    arity: int = 2,
) -> float:
    """The longest a dispute can stay open, however its parties drag their feet: every move of
    the longest game (`compute_rounds_bound`) made at the last moment of its deadline, then every
    referee attempt running out its ruling deadline. After that the dispute has ended (by move,
    by timeout, or by the no-fault rule), and its stakes are released."""
    moves = compute_rounds_bound(segment_steps, num_chunks, arity)
    return moves * move_timeout_s + referee_attempts * ruling_timeout_s


# --- signing -----------------------------------------------------------------------------------


def compute_move_message(
    *, game_id: str, party: str, kind: str, round_: int, payload: dict
) -> bytes:
    body = {"game": game_id, "party": party, "kind": kind, "round": round_, "payload": payload}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_move(signing_key, game: Game, *, party: str, kind: str, payload: dict) -> Move:
    message = compute_move_message(
        game_id=game.game_id, party=party, kind=kind, round_=game.round, payload=payload
    )
    return Move(
        party, kind, game.round, payload, sign(signing_key, DOMAIN_DISPUTE_MOVE, message).hex()
    )


def _check_signature(game: Game, move: Move) -> None:
    key = game.solver_key if move.party == SOLVER else game.verifier_key
    message = compute_move_message(
        game_id=game.game_id,
        party=move.party,
        kind=move.kind,
        round_=move.round,
        payload=move.payload,
    )
    try:
        signature = bytes.fromhex(move.signature)
    except ValueError:
        signature = b""
    if not is_valid_signature(bytes.fromhex(key), DOMAIN_DISPUTE_MOVE, message, signature):
        raise IllegalMove(
            move.party, "move is not signed by this party's key for this game and round"
        )


# --- transitions -------------------------------------------------------------------------------


def process_move(game: Game, move: Move, now: int) -> Game:
    """Apply one move; an illegal one raises IllegalMove and leaves `game` as it was."""
    if game.phase == OVER:
        raise IllegalMove(move.party, "the game is over")
    if now >= game.deadline:
        raise IllegalMove(move.party, "the deadline for this move has passed")
    if move.party != game.turn or move.kind not in TRANSITIONS.get(
        (game.phase, move.party), frozenset()
    ):
        raise IllegalMove(
            move.party,
            f"{move.party} may not '{move.kind}' now (phase {game.phase}, {game.turn} to move)",
        )
    if move.round != game.round:
        raise IllegalMove(
            move.party, f"move is for round {move.round}, the game is at {game.round}"
        )
    _check_signature(game, move)
    advanced = HANDLERS[move.kind](game, move.payload, now)
    return dataclasses.replace(advanced, moves=game.moves + 1)


def process_deadline(game: Game, now: int) -> Game:
    """The party to move that missed its deadline loses; otherwise nothing changes."""
    if game.phase == OVER or now < game.deadline or (game.phase, game.turn) not in LATE_LOSER:
        return game
    late = LATE_LOSER[(game.phase, game.turn)]
    return _over(game, _other(late), f"{late} missed its deadline")


def _other(party: str) -> str:
    return VERIFIER if party == SOLVER else SOLVER


def _over(game: Game, winner: str | None, reason: str, **extra: Any) -> Game:
    return dataclasses.replace(
        game, phase=OVER, turn=None, winner=winner, reason=reason, extra={**game.extra, **extra}
    )


def _next(game: Game, now: int, **changes: Any) -> Game:
    return dataclasses.replace(
        game, round=game.round + 1, deadline=now + game.move_timeout, **changes
    )


def _hex32(payload: dict, name: str, party: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise IllegalMove(party, f"'{name}' must be 64 lowercase hex digits")
    return value


def _dissect(game: Game, payload: dict, now: int) -> Game:
    points = compute_dissection_points(game.lo, game.hi, game.arity)
    roots = payload.get("roots")
    if not isinstance(roots, list) or len(roots) != len(points):
        raise IllegalMove(SOLVER, f"post exactly {len(points)} roots, for steps {list(points)}")
    posted = {p: _hex32({"root": r}, "root", SOLVER) for p, r in zip(points, roots, strict=True)}
    for step, root in posted.items():
        if game.roots.get(step, root) != root:
            return _over(
                game, VERIFIER, f"solver equivocated at step {step}", equivocation_step=step
            )
    return _next(game, now, roots={**game.roots, **posted}, points=points, turn=VERIFIER)


def _choose(game: Game, payload: dict, now: int) -> Game:
    bounds = (game.lo, *game.points, game.hi)
    index = payload.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(bounds) - 1:
        raise IllegalMove(VERIFIER, f"'index' must name one of the {len(bounds) - 1} sub-intervals")
    lo, hi = bounds[index], bounds[index + 1]
    root = _hex32(payload, "root", VERIFIER)
    if root == game.roots[hi]:
        raise IllegalMove(
            VERIFIER, f"your root at step {hi} equals the solver's: that is agreement"
        )
    if game.verifier_roots.get(hi, root) != root:
        raise IllegalMove(VERIFIER, f"you already claimed another root at step {hi}")
    verifier_roots = {**game.verifier_roots, lo: game.roots[lo], hi: root}
    game = _next(
        game,
        now,
        lo=lo,
        hi=hi,
        points=(),
        turn=SOLVER,
        verifier_roots=verifier_roots,
        trail=(*game.trail, (STEPS, lo, hi)),
    )
    return _enter_chunks_if_one_step(game)


def _enter_chunks_if_one_step(game: Game) -> Game:
    if game.hi - game.lo > 1:
        return game
    node_hashes = (game.roots[game.hi], game.verifier_roots[game.hi])
    game = dataclasses.replace(
        game, phase=CHUNKS, turn=SOLVER, node=(0, game.num_chunks), node_hashes=node_hashes
    )
    return _enter_state_if_one_chunk(game)


def compute_child_ranges(node: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """RFC 9162 split: the left subtree holds the largest power of two below the node's size."""
    start, end = node
    k = 1 << ((end - start - 1).bit_length() - 1)
    return (start, start + k), (start + k, end)


def _children(payload: dict, party: str, parent: str) -> tuple[str, str]:
    left, right = _hex32(payload, "left", party), _hex32(payload, "right", party)
    if compute_node_hash(bytes.fromhex(left), bytes.fromhex(right)).hex() != parent:
        raise IllegalMove(party, "the two children do not hash to your claim for this subtree")
    return left, right


def _split(game: Game, payload: dict, now: int) -> Game:
    split = _children(payload, SOLVER, game.node_hashes[0])
    return _next(game, now, split=split, turn=VERIFIER)


def _pick(game: Game, payload: dict, now: int) -> Game:
    mine = _children(payload, VERIFIER, game.node_hashes[1])
    left_range, right_range = compute_child_ranges(game.node)
    side = 0 if mine[0] != game.split[0] else 1
    node = (left_range, right_range)[side]
    game = _next(
        game,
        now,
        node=node,
        node_hashes=(game.split[side], mine[side]),
        split=("", ""),
        turn=SOLVER,
        trail=(*game.trail, (CHUNKS, *node)),
    )
    return _enter_state_if_one_chunk(game)


def _enter_state_if_one_chunk(game: Game) -> Game:
    if game.node[1] - game.node[0] > 1:
        return game
    return dataclasses.replace(game, phase=STATE, turn=SOLVER)


def process_state_supplied(game: Game, now: int, ruling_timeout: int | None = None) -> Game:
    """The agreed state at s is in the referee's hands (already checked against its root); the
    referee has `ruling_timeout` (default: the move timeout) to rule."""
    if game.phase != STATE:
        raise IllegalMove(SOLVER, f"no state is owed in phase {game.phase}")
    timeout = game.move_timeout if ruling_timeout is None else ruling_timeout
    return dataclasses.replace(
        game, phase=RULING, turn=REFEREE, round=game.round + 1, deadline=now + timeout
    )


def process_ruling_retry(game: Game, now: int, ruling_timeout: int) -> Game:
    """The referee failed once and will try again: a fresh ruling deadline (the caller bounds
    the attempts, so the ruling phase lasts at most attempts × ruling_timeout)."""
    if game.phase != RULING:
        raise IllegalMove(REFEREE, f"nothing to rule on in phase {game.phase}")
    return dataclasses.replace(game, deadline=now + ruling_timeout)


def process_ruling_failed(game: Game, fault: str) -> Game:
    """End the game without a ruling, by `RULING_FAILURE[fault]` (`STATE_FAULT`: the state could
    not be stepped; `REFEREE_FAULT`: the referee's attempts or its deadline ran out)."""
    if game.phase != RULING:
        raise IllegalMove(REFEREE, f"nothing to rule on in phase {game.phase}")
    if fault not in RULING_FAILURE:
        raise InvalidInput(f"must be one of {sorted(RULING_FAILURE)}", "fault")
    winner, no_fault, reason = RULING_FAILURE[fault]
    return _over(game, winner, reason, ruling_failure=fault, no_fault=no_fault)


def process_ruling(game: Game, chunk_hash: bytes) -> Game:
    """End the game with the referee's recomputed hash of the disputed chunk."""
    if game.phase != RULING:
        raise IllegalMove(REFEREE, f"nothing to rule on in phase {game.phase}")
    truth = chunk_hash.hex()
    solver_leaf, verifier_leaf = game.node_hashes
    winner = SOLVER if truth == solver_leaf else VERIFIER if truth == verifier_leaf else None
    reason = {
        SOLVER: "the referee's step reproduced the solver's chunk",
        VERIFIER: "the referee's step reproduced the verifier's chunk",
        None: "the referee's step reproduced neither chunk",
    }[winner]
    return _over(game, winner, reason, referee_chunk_hash=truth)


HANDLERS = {"dissect": _dissect, "choose": _choose, "split": _split, "pick": _pick}
