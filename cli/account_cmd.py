"""`veritrain account balance|history|faucet`: what a key holds, and why every movement happened.

`history` reads the public log (the same one `veritrain audit` checks) and keeps the entries whose
postings touch the key's accounts: "why was I slashed?" is one command."""

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cli.common import print_json
from sdk.client import CoordinatorClient
from sdk.keys import load_key_file


def register(subparsers: argparse._SubParsersAction) -> None:
    account = subparsers.add_parser("account", help="balances and their history").add_subparsers(
        dest="account_command", required=True, metavar="COMMAND"
    )
    for name, func, text in (
        ("balance", cmd_balance, "available balance, escrows and stakes"),
        ("history", cmd_history, "every movement of the key's money, with its reason"),
        ("faucet", cmd_faucet, "dev coordinators only: mint test money"),
    ):
        parser = account.add_parser(name, help=text)
        parser.add_argument("--key", required=True, help="key file")
        parser.add_argument("--coordinator", required=True, help="coordinator URL")
        parser.add_argument("--json", action="store_true")
        if name == "faucet":
            parser.add_argument("--amount", type=int, required=True)
        parser.set_defaults(func=func)


def _client(args: argparse.Namespace) -> CoordinatorClient:
    return CoordinatorClient(args.coordinator, load_key_file(Path(args.key)))


def cmd_balance(args: argparse.Namespace) -> int:
    view = _client(args).get_account()
    if args.json:
        print_json(view)
    else:
        print(f"available {view.available}")
        for account, amount in sorted(view.escrow_and_stakes.items()):
            print(f"{account:<80} {amount}")
    return 0


def get_history(client: CoordinatorClient, owner: str) -> list[dict]:
    """Log entries moving money of `owner`: index, kind, its net change, the entry's data."""
    size = client.get_tree_head().size
    rows = []
    for entry in client.iter_log_entries(size):
        body = json.loads(entry.body)
        mine = [
            (account, delta)
            for account, delta in body.get("postings", [])
            if account.split(":")[1] == owner
        ]
        if mine:
            rows.append(
                {
                    "index": body["index"],
                    "time": body["time"],
                    "kind": body["kind"],
                    "change": sum(d for _, d in mine),
                    "accounts": dict(mine),
                    "data": body["data"],
                }
            )
    return rows


def cmd_history(args: argparse.Namespace) -> int:
    client = _client(args)
    rows = get_history(client, client.public_key)
    if args.json:
        print_json(rows)
        return 0
    table = Table(title=f"history of {client.public_key[:16]}…")
    for column in ("#", "event", "change", "accounts", "details"):
        table.add_column(column)
    for row in rows:
        details = {
            k: v
            for k, v in row["data"].items()
            if k in ("job_id", "reason", "winner", "slashed", "price")
        }
        table.add_row(
            str(row["index"]),
            row["kind"],
            f"{row['change']:+d}",
            ", ".join(f"{a.split(':')[0]} {d:+d}" for a, d in row["accounts"].items()),
            json.dumps(details)[:80],
        )
    Console().print(table)
    return 0


def cmd_faucet(args: argparse.Namespace) -> int:
    result = _client(args).faucet(args.amount)
    print_json(result) if args.json else print(f"available {result.available}")
    return 0
