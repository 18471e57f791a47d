"""`veritrain audit URL`: check a coordinator's public log and recompute every balance from it.

Checks, in order: every entry's index and `prev` link, its leaf hash and its signature by the
coordinator key (pinned with --key, else taken from /v1/info); that the RFC 9162 root over all
leaves equals the signed tree head; that every entry's postings sum to zero; that replaying
the postings reproduces each balance the server reports; and that every draw of verifiers and
segments is the one its published seed gives (`cli/audit_draws.py`). Exit status 1 on any difference.
"""

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from cli.audit_draws import DrawAuditor
from coordinator.log.format import (
    GENESIS_PREV,
    compute_entry_leaf_hash,
    is_valid_entry_signature,
    is_valid_tree_head,
)
from protocol.errors import InvalidInput
from protocol.merkle import root_from_leaf_hashes, verify_consistency
from sdk.client import CoordinatorClient
from sdk.responses import LogEntryView


@dataclass
class AuditReport:
    log_size: int = 0
    root: str = ""  # pass "log_size:root" as --previous next time
    accounts_checked: int = 0
    draws_checked: int = 0
    problems: list[str] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "log_size": self.log_size,
            "root": self.root,
            "accounts_checked": self.accounts_checked,
            "draws_checked": self.draws_checked,
            "problems": self.problems,
        }


def _check_entry(
    entry: LogEntryView, expected_index: int, prev: str, key: bytes, report: AuditReport
) -> str:
    """Check one entry; returns its leaf hash (hex), the next entry's expected `prev`."""
    body = entry.body.encode()
    decoded = json.loads(body)
    where = f"entry {expected_index}"
    if entry.index != expected_index or decoded.get("index") != expected_index:
        report.problems.append(f"{where}: index out of sequence")
    if decoded.get("prev") != prev:
        report.problems.append(f"{where}: prev link {decoded.get('prev')} != {prev}")
    leaf = compute_entry_leaf_hash(body).hex()
    if leaf != entry.leaf_hash:
        report.problems.append(f"{where}: leaf hash does not match its body")
    if not is_valid_entry_signature(key, body, bytes.fromhex(entry.signature)):
        report.problems.append(f"{where}: bad coordinator signature")
    postings = decoded.get("postings", [])
    if sum(delta for _, delta in postings) != 0:
        report.problems.append(f"{where}: postings do not sum to zero")
    for account, delta in postings:
        report.balances[account] = report.balances.get(account, 0) + delta
    return leaf


def _check_previous_head(
    client: CoordinatorClient,
    previous: tuple[int, bytes],
    size: int,
    root: bytes,
    report: AuditReport,
) -> None:
    """A tree head seen earlier must be a prefix of today's log (RFC 9162 consistency)."""
    old_size, old_root = previous
    if old_size > size:
        report.problems.append(f"log shrank from {old_size} to {size} entries")
        return
    proof = client.get_consistency_proof(old_size, size) if old_size < size else []
    if not verify_consistency(old_size, size, proof, old_root, root):
        report.problems.append(
            f"the log is not an extension of the earlier head of size {old_size}"
        )


def check_coordinator(
    client: CoordinatorClient,
    pinned_key: bytes | None = None,
    previous: tuple[int, bytes] | None = None,
) -> AuditReport:
    """Read the coordinator's log, tree head and balances over HTTP and check them; every
    difference goes into the report (it raises only when the server cannot be read)."""
    report = AuditReport()
    key = pinned_key or bytes.fromhex(client.get_info().public_key)
    head = client.get_tree_head()
    report.log_size, report.root = head.size, head.root.hex()
    if head.public_key != key:
        report.problems.append("tree head is signed by a different key than the pinned one")
    if not is_valid_tree_head(key, head.size, head.timestamp_ms, head.root, head.signature):
        report.problems.append("tree head signature is invalid")
    leaves: list[bytes] = []
    prev = GENESIS_PREV
    draws = DrawAuditor()
    for index, entry in enumerate(client.iter_log_entries(head.size)):
        draws.observe(json.loads(entry.body), report.balances)  # before its own postings
        prev = _check_entry(entry, index, prev, key, report)
        leaves.append(bytes.fromhex(prev))
    report.problems += draws.problems
    report.draws_checked = draws.draws_checked
    if len(leaves) != head.size:
        report.problems.append(f"server served {len(leaves)} entries for a tree of {head.size}")
    if root_from_leaf_hashes(leaves) != head.root:
        report.problems.append("Merkle root over the entries differs from the signed tree head")
    if previous is not None:
        _check_previous_head(client, previous, head.size, head.root, report)
    _compare_balances(client, report)
    return report


def _compare_balances(client: CoordinatorClient, report: AuditReport) -> None:
    served: dict[str, int] = defaultdict(int)
    for row in client.iter_ledger_accounts():
        served[row.account] = row.balance
    report.accounts_checked = len(served)
    for account in sorted(set(served) | set(report.balances)):
        mine, theirs = report.balances.get(account, 0), served.get(account, 0)
        if mine != theirs:
            report.problems.append(f"balance of {account}: log says {mine}, server says {theirs}")


def _parse_previous(text: str) -> tuple[int, bytes]:
    size, _, root = text.partition(":")
    try:
        parsed = int(size), bytes.fromhex(root)
    except ValueError as err:
        raise InvalidInput("expected SIZE:ROOTHEX from an earlier audit", "--previous") from err
    if parsed[0] < 1 or len(parsed[1]) != 32:
        raise InvalidInput("expected SIZE:ROOTHEX from an earlier audit", "--previous")
    return parsed


def run_audit(args: argparse.Namespace) -> int:
    key = bytes.fromhex(args.key) if args.key else None
    previous = _parse_previous(args.previous) if args.previous else None
    try:
        with CoordinatorClient(args.url, timeout=httpx.Timeout(args.timeout)) as client:
            report = check_coordinator(client, key, previous)
    except httpx.HTTPError as err:  # unreachable or broken server: say so in one line
        raise InvalidInput(f"cannot audit {args.url}: {type(err).__name__}: {err}", "url") from err
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        status = "OK" if report.ok else "FAILED"
        print(
            f"audit {status}: {report.log_size} log entries (root {report.root}), "
            f"{report.accounts_checked} accounts"
        )
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="verify a coordinator's public log and balances")
    parser.add_argument("url", help="coordinator base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument("--key", help="pin the coordinator's public key (hex) instead of asking it")
    parser.add_argument(
        "--previous",
        metavar="SIZE:ROOT",
        help="a tree head from an earlier audit: check today's log extends it",
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.set_defaults(func=run_audit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="veritrain")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
