"""SQL access for ledger accounts and postings, with row locks taken in id order."""

from collections.abc import Iterable

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from coordinator.ledger.accounts import AccountKey
from coordinator.models import LedgerAccount, Posting


def _select_accounts(keys: list[AccountKey]):
    wanted = [(k.kind, k.owner, k.job_id) for k in keys]
    return select(LedgerAccount).where(
        tuple_(LedgerAccount.kind, LedgerAccount.owner, LedgerAccount.job_id).in_(wanted))


def _insert_missing(session: Session, keys: Iterable[AccountKey]) -> None:
    rows = [{"kind": k.kind, "owner": k.owner, "job_id": k.job_id, "balance": 0} for k in keys]
    if not rows:
        return
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(LedgerAccount).values(rows).on_conflict_do_nothing())


def lock_accounts(session: Session, keys: list[AccountKey]) -> dict[AccountKey, LedgerAccount]:
    """Get-or-create the accounts and lock them FOR UPDATE in id order (no deadlock cycles)."""
    stmt = _select_accounts(keys).order_by(LedgerAccount.id).with_for_update()
    fresh = {"populate_existing": True}  # rows read earlier in this session may be stale
    found = {AccountKey(a.kind, a.owner, a.job_id): a
             for a in session.execute(stmt, execution_options=fresh).scalars()}
    missing = [k for k in keys if k not in found]
    if missing:
        _insert_missing(session, missing)
        found = {AccountKey(a.kind, a.owner, a.job_id): a
                 for a in session.execute(stmt, execution_options=fresh).scalars()}
    return found


def add_postings(session: Session, log_index: int, legs: list[tuple[LedgerAccount, int]]) -> None:
    session.add_all([Posting(log_index=log_index, account_id=a.id, delta=d) for a, d in legs])


def get_balance(session: Session, key: AccountKey) -> int:
    stmt = select(LedgerAccount.balance).where(
        LedgerAccount.kind == key.kind, LedgerAccount.owner == key.owner,
        LedgerAccount.job_id == key.job_id)
    return session.execute(stmt).scalar_one_or_none() or 0


def get_accounts_page(session: Session, after_id: int, limit: int) -> list[LedgerAccount]:
    stmt = select(LedgerAccount).where(LedgerAccount.id > after_id).order_by(LedgerAccount.id).limit(limit)
    return list(session.execute(stmt).scalars())


def get_owner_accounts(session: Session, owner: str) -> list[LedgerAccount]:
    stmt = select(LedgerAccount).where(LedgerAccount.owner == owner).order_by(LedgerAccount.id)
    return list(session.execute(stmt).scalars())
