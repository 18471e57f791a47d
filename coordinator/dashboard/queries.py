"""What the dashboard's pages show, read in one transaction each: plain dicts for the templates.

Everything here is public already (the API and the log). Values that came from peers (job ids,
labels, spec values, reasons) reach the templates as data and are escaped there (autoescape)."""

import json
import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.disputes import repository as disputes_repository
from coordinator.disputes.service import get_dispute_view
from coordinator.jobs import repository as jobs_repository
from coordinator.jobs.checkpoints import get_state_layout
from coordinator.jobs.service import get_stored_spec
from coordinator.ledger.accounts import AVAILABLE, STAKE, AccountKey
from coordinator.ledger.repository import get_balance, get_owner_accounts
from coordinator.log import repository as log_repository
from coordinator.log import service as log_service
from coordinator.models import Bid, Checkpoint, Job, LedgerAccount, LogEntry, Verifier
from coordinator.runtime import Runtime
from coordinator.verification import repository as verification_repository
from protocol.dispute import CHUNKS, STEPS, Game
from protocol.merkle import root_from_leaf_hashes
from protocol.state import CHUNK_SIZE
from protocol.wire import JobState

MAX_ROWS = 500  # per list on a page: the newest ones
DTYPE_BYTES = {"F32": 4, "F64": 8, "I64": 8}
HEX = frozenset("0123456789abcdef")


def is_hex64(value: str) -> bool:
    return len(value) == 64 and set(value) <= HEX


def _entry(row: LogEntry) -> dict[str, Any]:
    body = json.loads(row.body)
    return {
        "index": body["index"],
        "time": body["time"],
        "kind": body["kind"],
        "data": body["data"],
        "postings": [(account, delta) for account, delta in body.get("postings", [])],
    }


def _entries_mentioning(session: Session, needle: str) -> list[dict[str, Any]]:
    """Log entries whose body contains `needle` (a 64-hex id: LIKE-safe), newest MAX_ROWS."""
    stmt = (
        select(LogEntry)
        .where(LogEntry.body.contains(needle))
        .order_by(LogEntry.index.desc())
        .limit(MAX_ROWS)
    )
    return [_entry(r) for r in reversed(session.execute(stmt).scalars().all())]


def get_market(session: Session) -> dict[str, Any]:
    jobs = session.execute(select(Job).order_by(Job.id.desc()).limit(MAX_ROWS)).scalars().all()
    by_state: dict[str, list[Job]] = {state.value: [] for state in JobState}
    for job in jobs:
        by_state.setdefault(job.state, []).append(job)
    verifiers = [
        {
            "key": v.public_key,
            "profiles": json.loads(v.profiles),
            "stake": get_balance(session, AccountKey(STAKE, v.public_key, "")),
        }
        for v in session.execute(select(Verifier).order_by(Verifier.public_key)).scalars()
    ]
    return {"by_state": by_state, "verifiers": verifiers, "solvers": _solvers(session)}


def _solvers(session: Session) -> list[dict[str, Any]]:
    """Accounts that bid on or won jobs (newest MAX_ROWS by their last bid or award), with the
    stake they have locked on jobs now (stake accounts with a job; a verifier's standing stake
    has none)."""
    bids = dict(
        session.execute(
            select(Bid.bidder, func.count()).group_by(Bid.bidder)  # one row per bidder
        ).all()
    )
    won = dict(
        session.execute(
            select(Job.solver, func.count()).where(Job.solver.is_not(None)).group_by(Job.solver)
        ).all()
    )
    keys = sorted(set(bids) | set(won))[:MAX_ROWS]
    locked: dict[str, int] = {}
    if keys:
        locked = dict(
            session.execute(
                select(LedgerAccount.owner, func.sum(LedgerAccount.balance))
                .where(
                    LedgerAccount.kind == STAKE,
                    LedgerAccount.job_id != "",
                    LedgerAccount.owner.in_(keys),
                )
                .group_by(LedgerAccount.owner)
            ).all()
        )
    return [
        {
            "key": key,
            "bids": bids.get(key, 0),
            "won": won.get(key, 0),
            "locked": int(locked.get(key) or 0),
        }
        for key in keys
    ]


CURVE_W, CURVE_H, CURVE_PAD = 600, 200, 4  # the loss curve's SVG viewBox and inner margin
MAX_CURVE_POINTS = 1_000  # drawn; a longer reported curve is thinned evenly for the page


def get_loss_curve(reported: str | None) -> dict[str, Any] | None:
    """The solver's reported loss curve as an SVG polyline (x: step, y: loss, larger up), with
    the axes' ends; None when none was reported (or the stored text is unreadable)."""
    if not reported:
        return None
    try:
        parsed = json.loads(reported)
        curve = sorted((int(k), float(v)) for k, v in parsed.items())
    except (ValueError, AttributeError, TypeError):
        return None
    total = len(curve)
    curve = [(s, v) for s, v in curve if math.isfinite(v)]
    if not curve:
        return None
    if len(curve) > MAX_CURVE_POINTS:
        span = (len(curve) - 1) / (MAX_CURVE_POINTS - 1)
        curve = [curve[round(i * span)] for i in range(MAX_CURVE_POINTS)]
    steps, losses = [s for s, _ in curve], [v for _, v in curve]
    x0, x1, y0, y1 = min(steps), max(steps), min(losses), max(losses)
    w, h = CURVE_W - 2 * CURVE_PAD, CURVE_H - 2 * CURVE_PAD

    def scale(value: float, lo: float, hi: float, size: float) -> float:
        return size / 2 if hi == lo else (value - lo) / (hi - lo) * size

    points = " ".join(
        f"{CURVE_PAD + scale(s, x0, x1, w):.1f},{CURVE_PAD + h - scale(v, y0, y1, h):.1f}"
        for s, v in curve
    )
    return {
        "points": points,
        "count": len(curve),
        "reported": total,
        "step_min": x0,
        "step_max": x1,
        "loss_min": f"{y0:.6g}",
        "loss_max": f"{y1:.6g}",
        "width": CURVE_W,
        "height": CURVE_H,
    }


def get_job_page(session: Session, rt: Runtime, job_id: str) -> dict[str, Any]:
    job = jobs_repository.get_job(session, job_id)  # NotFound for an unknown id
    checkpoints = (
        session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.index)
        )
        .scalars()
        .all()
    )
    spec = get_stored_spec(job.spec_json)
    return {
        "job": job,
        "spec": {
            k: v if isinstance(v, str | int | float | bool) else json.dumps(v)
            for k, v in spec.items()
        },
        "bids": jobs_repository.get_bids(session, job_id),
        "checkpoints": checkpoints,
        "assignments": verification_repository.get_job_assignments(session, job_id),
        "disputes": disputes_repository.get_job_disputes(session, job_id),
        "timeline": _entries_mentioning(session, job_id),
        "loss_curve": get_loss_curve(job.reported_losses),
    }


def _chunk_tensor(rt: Runtime, session: Session, job: Job, chunk: int) -> str | None:
    """The tensor that chunk `chunk` of the job's states lies in (the layout is cached per job)."""
    try:
        layout = get_state_layout(rt, session, job)
    except Exception:  # a layout that cannot be computed: the chunk keeps its number only
        return None
    index = 0
    for name, (dtype, shape) in sorted(layout.items()):
        size = math.prod(shape) * DTYPE_BYTES.get(dtype, 8)
        count = max(1, math.ceil(size / CHUNK_SIZE))
        if chunk < index + count:
            return f"{name} (part {chunk - index + 1} of {count})" if count > 1 else name
        index += count
    return None


def get_dispute_page(session: Session, rt: Runtime, dispute_id: int) -> dict[str, Any]:
    dispute = disputes_repository.get_dispute(session, dispute_id)  # NotFound if unknown
    view = get_dispute_view(dispute)
    game = Game.from_json(view.state["game"])
    job = jobs_repository.get_job(session, dispute.job_id)
    entries = [
        e
        for e in _entries_mentioning(session, dispute.job_id)
        if e["kind"].startswith("dispute.") and e["data"].get("dispute") == dispute_id
    ]
    # Rounds: the opening interval, then each narrowing (the verifier's choose/pick moves, in
    # the order of the game's trail), each with the move that made it.
    trail = list(game.trail)
    start, end = min(game.verifier_roots), max(game.verifier_roots)
    rounds: list[dict[str, Any]] = [
        {"phase": STEPS, "lo": start, "hi": end, "party": None, "kind": "opened", "time": None}
    ]
    opened = next((e for e in entries if e["kind"] == "dispute.opened"), None)
    if opened:
        rounds[0]["time"] = opened["time"]
    moves = []
    for e in entries:
        if e["kind"] != "dispute.move":
            continue
        move = e["data"].get("move", {})
        moves.append({"time": e["time"], "index": e["index"], **move})
        if move.get("kind") in ("choose", "pick") and trail:
            phase, a, b = trail.pop(0)
            if phase == CHUNKS and rounds[-1]["phase"] == STEPS:
                rounds.append(_chunks_start(game))
            rounds.append(
                {
                    "phase": phase,
                    "lo": a,
                    "hi": b,
                    "party": move.get("party"),
                    "kind": move.get("kind"),
                    "time": e["time"],
                }
            )
    if game.hi - game.lo == 1 and game.phase != STEPS and rounds[-1]["phase"] == STEPS:
        rounds.append(_chunks_start(game))
    for r in rounds:
        r["width"] = r["hi"] - r["lo"]
    ruled = next((e for e in entries if e["kind"] == "dispute.ruled"), None)
    chunk_name = (
        _chunk_tensor(rt, session, job, view.dispute_chunk)
        if view.dispute_chunk is not None
        else None
    )
    return {
        "dispute": view,
        "game": game,
        "rounds": rounds,
        "moves": moves,
        "entries": entries,
        "ruled": ruled,
        "chunk_name": chunk_name,
    }


def _chunks_start(game: Game) -> dict[str, Any]:
    return {
        "phase": CHUNKS,
        "lo": 0,
        "hi": game.num_chunks,
        "party": None,
        "kind": "one step pinned: the chunk tree",
        "time": None,
    }


def get_account_page(session: Session, key: str) -> dict[str, Any]:
    rows = get_owner_accounts(session, key)
    movements = []
    for e in _entries_mentioning(session, key):
        mine = [(a, d) for a, d in e["postings"] if a.split(":")[1:2] == [key]]
        if mine:  # the same filter as `veritrain account history` (cli/account_cmd.py)
            movements.append({**e, "mine": mine, "change": sum(d for _, d in mine)})
    disputes = disputes_repository.get_party_disputes(session, key, None, MAX_ROWS)
    return {
        "key": key,
        "available": next((r.balance for r in rows if r.kind == AVAILABLE), 0),
        "held": [r for r in rows if r.kind != AVAILABLE],
        "movements": movements,
        "disputes": disputes,
        "known": bool(rows) or bool(movements),
    }


def get_log_page(session: Session, rt: Runtime, old: int | None) -> dict[str, Any]:
    head = log_service.get_tree_head(session, rt.key, rt.clock.now())
    size = head.size
    old_size = min(max(1, old if old is not None else size // 2 or 1), size) if size else 0
    old_root = (
        bytes(root_from_leaf_hashes(log_repository.get_leaf_hashes(session, old_size))).hex()
        if old_size
        else ""
    )
    start = max(0, size - 50)
    entries = [_entry(r) for r in log_repository.get_entries(session, start, size)]
    return {
        "head": head,
        "root": bytes(head.root).hex(),
        "old_size": old_size,
        "old_root": old_root,
        "entries": list(reversed(entries)),
    }
