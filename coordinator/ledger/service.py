"""Double-entry movements: balanced legs, checked in the transaction, logged publicly.

Every movement is one public log entry whose `postings` are exactly the legs applied here, so
an auditor replaying the log recomputes every balance. Non-negativity is checked on locked rows
before the update (a typed error for the caller) and again by the database's CHECK constraint.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordinator.errors import InsufficientFunds
from coordinator.ledger import repository
from coordinator.ledger.accounts import AccountKey
from coordinator.log.service import process_log_append
from coordinator.runtime import Runtime
from protocol.errors import InternalError, InvalidInput

Leg = tuple[AccountKey, int]


@dataclass(frozen=True)
class AppendedEntry:
    index: int
    leaf_hash: str
    balances: dict[AccountKey, int]


def compute_net_legs(legs: Sequence[Leg]) -> list[Leg]:
    """Merge legs per account, drop zeros, sort by account (deterministic log bodies)."""
    net: dict[AccountKey, int] = defaultdict(int)
    for key, delta in legs:
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InternalError(f"posting amount must be an int, got {delta!r}")
        net[key] += delta
    return sorted((k, d) for k, d in net.items() if d != 0)


def transfer(source: AccountKey, target: AccountKey, amount: int) -> list[Leg]:
    if amount < 0:
        raise InvalidInput("amount must not be negative", "amount")
    return [(source, -amount), (target, amount)]


def process_movement(
    session: Session, rt: Runtime, kind: str, data: dict, legs: Sequence[Leg]
) -> AppendedEntry:
    """Apply balanced `legs` and log them as one entry of `kind` (also when no money moves).
    Returns the log entry, with every touched account's new balance."""
    net = compute_net_legs(legs)
    if sum(d for _, d in net) != 0:
        raise InternalError(f"unbalanced movement {kind}: {net}")
    balances: dict[AccountKey, int] = {}
    if net:
        session.flush()  # pending ORM rows (a job, a bid) go first: lock order job -> accounts
        accounts, applied = _lock_and_apply(session, net)
        for key, delta in net:
            if accounts[key].balance + delta < 0 and not key.may_go_negative:
                raise InsufficientFunds(str(key), accounts[key].balance, -delta)
            balances[key] = accounts[key].balance + delta
        if not applied:  # the CHECK constraint re-checks this inside the same transaction
            repository.update_balances(session, {accounts[k].id: v for k, v in balances.items()})
    entry = process_log_append(
        session,
        rt.key,
        rt.clock.now(),
        kind,
        data,
        [(str(k), d) for k, d in net],
        [(accounts[k].id, d) for k, d in net] if net else [],
    )
    return AppendedEntry(entry.index, entry.leaf_hash, balances)


def _lock_and_apply(session: Session, net: list[Leg]):
    """Locked balances before the movement, and whether it is already applied (PostgreSQL does
    lock, check and update in one round trip; elsewhere the caller updates after checking)."""
    if session.bind.dialect.name == "postgresql":
        return repository.lock_and_apply(session, net)
    return repository.lock_accounts(session, [k for k, _ in net]), False


def get_balance(session: Session, key: AccountKey) -> int:
    return repository.get_balance(session, key)
