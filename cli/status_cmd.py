"""`veritrain solver status` / `veritrain verifier status`: one screen for a daemon's operator.

Read from the daemon's store (`state.json`: what it took on, refused, challenged) and the
coordinator (where each item stands now, its next deadline, open disputes, the balance) and the
public log (`account history`: every movement of the key's money and its reason). It only reads:
safe to run beside the daemon. `--json` prints the same as one object."""

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from cli.account_cmd import get_history
from cli.common import print_json, read_json_file
from protocol.dispute import SOLVER, VERIFIER, Game
from protocol.errors import InvalidInput
from protocol.wire import (
    SOLVER_OWES,
    VERIFIER_OWES,
    AssignmentState,
    DisputeStatus,
    JobState,
)
from sdk.client import CoordinatorClient
from sdk.keys import load_key_file
from sdk.responses import AssignmentView, DisputeView, JobView

# What a solver's job waits for, by its state on the coordinator.
SOLVER_WAITS = {
    JobState.BIDDING: "the award (bidding closes)",
    JobState.AWARDED: "its commitment (training)",
    JobState.VERIFYING: "the verifiers (verification closes)",
}
OPEN_ASSIGNMENT_STATES = SOLVER_OWES | VERIFIER_OWES | {AssignmentState.DISPUTED}
# Log entry kinds that are the key's own deposits and withdrawals, not earnings or losses.
NOT_EARNINGS = frozenset({"faucet", "transfer"})


def add_status_parser(role_commands: argparse._SubParsersAction, role: str) -> None:
    parser = role_commands.add_parser(
        "status",
        help=f"what this {role} holds, earned and lost, and what it waits for",
    )
    parser.add_argument("--key", required=True, help="the daemon's key file")
    parser.add_argument("--coordinator", required=True, help="coordinator URL")
    parser.add_argument("--store", required=True, help="the daemon's store directory")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    parser.set_defaults(func=cmd_status, role=role)


def read_store_state(store: Path) -> dict[str, Any]:
    path = store / "state.json"
    if not path.exists():
        raise InvalidInput(f"no state.json in {store}: has a daemon run there?", "store")
    state = read_json_file(str(path), "store")
    if not isinstance(state, dict):
        raise InvalidInput(f"{path} is not a daemon state file", "store")
    return state


def get_status(client: CoordinatorClient, store: Path, role: str) -> dict[str, Any]:
    """Everything the screen shows, as plain data (what `--json` prints)."""
    state = read_store_state(store)
    now = client.get_info().now
    me = client.public_key
    disputes = [_dispute_row(d, me, now) for d in client.list_disputes(status=None)]
    if role == "solver":
        items, refused = _solver_items(client, state, now), state.get("refused", {})
    else:
        items, refused = _verifier_items(client, state, now), state.get("refused", {})
    account = client.get_account()
    movements = [_movement(row) for row in get_history(client, me) if row["change"]]
    earned = sum(
        m["change"] for m in movements if m["change"] > 0 and m["kind"] not in NOT_EARNINGS
    )
    lost = -sum(m["change"] for m in movements if m["change"] < 0 and m["kind"] not in NOT_EARNINGS)
    waiting = [
        {k: item[k] for k in ("what", "waits_for", "deadline", "in_s")}
        for item in [*items, *disputes]
        if item.get("waits_for")
    ]
    waiting.sort(key=lambda w: w["deadline"])
    status: dict[str, Any] = {
        "role": role,
        "account": me,
        "store": str(store),
        "now": now,
        "items": items,
        "refused": refused,
        "disputes": disputes,
        "available": account.available,
        "escrow_and_stakes": account.escrow_and_stakes,
        "earned": earned,
        "lost": lost,
        "movements": movements,
        "waiting_for": waiting,
    }
    if role == "verifier":
        status["registered"] = bool(state.get("registered"))
        watch = state.get("watch", {})
        status["watch"] = {
            "challenges_last_hour": len(
                [t for t in watch.get("times", []) if now - t < 3600]  # noqa: PLR2004
            ),
            "challenged": watch.get("challenged", {}),
            "skipped": watch.get("skipped", {}),
        }
    return status


def _solver_items(client: CoordinatorClient, state: dict, now: float) -> list[dict]:
    items = []
    for job_id, record in state.get("jobs", {}).items():
        job = client.get_job(job_id)
        mine = job.solver in (None, client.public_key)
        waits = SOLVER_WAITS.get(job.state) if mine else None
        items.append(
            {
                "what": f"job {job_id[:12]}",
                "job_id": job_id,
                "local_state": record.get("state"),
                "state": str(job.state) if mine else "lost the award",
                "outcome": job.outcome,
                "price": job.price if mine else None,
                "stake": job.stake if mine else None,
                "progress": record.get("progress"),
                "waits_for": waits,
                "deadline": job.deadline if waits else None,
                "in_s": _in(job.deadline, now) if waits else None,
                "open_assignments": _open_assignments(client, job) if mine else 0,
            }
        )
    return items


def _open_assignments(client: CoordinatorClient, job: JobView) -> int:
    if job.state is not JobState.VERIFYING:
        return 0
    return sum(a.state in OPEN_ASSIGNMENT_STATES for a in client.get_job_assignments(job.job_id))


def _verifier_items(client: CoordinatorClient, state: dict, now: float) -> list[dict]:
    records = state.get("assignments", {})
    items = []
    for a in client.get_assignments():
        waits = _verifier_waits(a)
        items.append(
            {
                "what": f"assignment {a.id}",
                "assignment_id": a.id,
                "job_id": a.job_id,
                "segment": a.segment,
                "state": str(a.state),
                "volunteer": a.volunteer,
                "replayed": str(a.id) in records,
                "refused": str(a.id) in state.get("refused", {}),
                "waits_for": waits,
                "deadline": a.deadline if waits else None,
                "in_s": _in(a.deadline, now) if waits else None,
            }
        )
    return items


def _verifier_waits(a: AssignmentView) -> str | None:
    return {
        AssignmentState.AWAITING_START: "the solver's checkpoint i",
        AssignmentState.ASSIGNED: "its own commit (replaying)",
        AssignmentState.COMMITTED: "the solver's checkpoint i+1",
        AssignmentState.REVEALABLE: "its own reveal",
        AssignmentState.DISPUTED: "the dispute",
    }.get(a.state)


def _dispute_row(d: DisputeView, me: str, now: float) -> dict:
    party = SOLVER if Game.from_json(d.game_json).solver_key == me else VERIFIER
    is_open = d.status == DisputeStatus.OPEN
    if not is_open:
        waits = None
    elif d.turn == party:
        waits = f"its own move ({d.phase})"
    else:
        waits = f"{d.turn or 'the referee'} ({d.phase})"
    return {
        "what": f"dispute {d.id}",
        "dispute_id": d.id,
        "job_id": d.job_id,
        "assignment_id": d.assignment_id,
        "as": party,
        "status": str(d.status),
        "phase": d.phase,
        "round": d.round,
        "turn": d.turn,
        "dispute_step": d.dispute_step,
        "dispute_chunk": d.dispute_chunk,
        "winner": d.winner,
        "won": None if is_open or d.winner is None else d.winner == party,
        "reason": d.reason,
        "waits_for": waits,
        "deadline": d.deadline if waits else None,
        "in_s": _in(d.deadline, now) if waits else None,
    }


def _movement(row: dict) -> dict:
    data = row["data"]
    return {
        "index": row["index"],
        "time": row["time"],
        "kind": row["kind"],
        "change": row["change"],
        "job_id": data.get("job_id"),
        "reason": data.get("reason") or data.get("outcome"),
        "accounts": row["accounts"],
    }


def _in(deadline: float, now: float) -> float:
    return round(deadline - now, 1)


def cmd_status(args: argparse.Namespace) -> int:
    client = CoordinatorClient(args.coordinator, load_key_file(Path(args.key)))
    status = get_status(client, Path(args.store), args.role)
    if args.json:
        print_json(status)
    else:
        Console().print(render_status(status))
    return 0


def render_status(status: dict) -> Group:
    role, me = status["role"], status["account"]
    head = (
        f"[bold]{role}[/bold] {me[:16]}…  available [bold]{status['available']}[/bold]  "
        f"locked {sum(status['escrow_and_stakes'].values())}  "
        f"earned [green]+{status['earned']}[/green]  lost [red]-{status['lost']}[/red]"
    )
    if role == "verifier":
        head += f"  registered {'yes' if status['registered'] else 'no'}"
        head += f"  watch challenges (last hour) {status['watch']['challenges_last_hour']}"
    parts: list[Any] = [head]
    holds = Table(title="what it holds", title_justify="left")
    if role == "solver":
        columns = ("job", "state", "outcome", "price", "stake", "progress", "verifiers owing")
        for c in columns:
            holds.add_column(c)
        for i in status["items"]:
            progress = i["progress"] or {}
            holds.add_row(
                i["job_id"][:12],
                i["state"],
                i["outcome"] or "-",
                _dash(i["price"]),
                _dash(i["stake"]),
                f"{progress.get('step')}/{progress.get('steps')}" if progress else "-",
                str(i["open_assignments"]),
            )
    else:
        for c in ("assignment", "job", "segment", "state", "replayed", "volunteer"):
            holds.add_column(c)
        for i in status["items"]:
            holds.add_row(
                str(i["assignment_id"]),
                i["job_id"][:12],
                str(i["segment"]),
                i["state"] + (" (refused)" if i["refused"] else ""),
                "yes" if i["replayed"] else "no",
                "yes" if i["volunteer"] else "no",
            )
    parts.append(holds)
    if status["refused"]:
        refused = Table(title="refused (cannot run)", title_justify="left")
        refused.add_column("job / assignment")
        refused.add_column("reason")
        for key, reason in status["refused"].items():
            refused.add_row(key[:12], str(reason)[:100])
        parts.append(refused)
    if status["disputes"]:
        disputes = Table(title="disputes", title_justify="left")
        for c in ("dispute", "job", "as", "status", "phase", "step", "chunk", "winner"):
            disputes.add_column(c)
        for d in status["disputes"]:
            disputes.add_row(
                str(d["dispute_id"]),
                d["job_id"][:12],
                d["as"],
                d["status"],
                d["phase"],
                _dash(d["dispute_step"]),
                _dash(d["dispute_chunk"]),
                (d["winner"] or "-")
                + ("" if d["won"] is None else " (won)" if d["won"] else " (lost)"),
            )
        parts.append(disputes)
    money = Table(title="earned and lost, and why (public log)", title_justify="left")
    for c in ("#", "event", "change", "job", "reason"):
        money.add_column(c)
    for m in status["movements"]:
        colour = "green" if m["change"] > 0 else "red"
        money.add_row(
            str(m["index"]),
            m["kind"],
            f"[{colour}]{m['change']:+d}[/{colour}]",
            (m["job_id"] or "-")[:12],
            m["reason"] or "-",
        )
    parts.append(money)
    waiting = Table(title="waiting for", title_justify="left")
    for c in ("item", "waits for", "deadline in"):
        waiting.add_column(c)
    for w in status["waiting_for"]:
        overdue = w["in_s"] is not None and w["in_s"] < 0
        waiting.add_row(
            w["what"], w["waits_for"], f"{w['in_s']:.0f} s" + (" (overdue)" if overdue else "")
        )
    if not status["waiting_for"]:
        waiting.add_row("-", "nothing: idle", "-")
    parts.append(waiting)
    return Group(*parts)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)
