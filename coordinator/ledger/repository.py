"""SQL access for ledger accounts and postings, with row locks taken in id order."""

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from coordinator.ledger.accounts import AccountKey
from coordinator.models import LedgerAccount

_ACCOUNTS = LedgerAccount.__table__


@functools.cache
def _select_accounts_stmt(count: int):
    """SELECT … FOR UPDATE of `count` accounts by key, built once per count (hot path).
    OR of equalities, not a row-value IN: SQLite answers the latter with a full table scan."""
    t = _ACCOUNTS
    return (select(t.c.id, t.c.kind, t.c.owner, t.c.job_id, t.c.balance).where(or_(*[
        and_(t.c.kind == bindparam(f"k{i}"), t.c.owner == bindparam(f"o{i}"), t.c.job_id == bindparam(f"j{i}"))
        for i in range(count)])).order_by(t.c.id).with_for_update())


def _key_params(keys: list[AccountKey]) -> dict[str, str]:
    params: dict[str, str] = {}
    for i, k in enumerate(keys):
        params.update({f"k{i}": k.kind, f"o{i}": k.owner, f"j{i}": k.job_id})
    return params


def _insert_missing(session: Session, keys: Iterable[AccountKey]) -> None:
    rows = [{"kind": k.kind, "owner": k.owner, "job_id": k.job_id, "balance": 0} for k in keys]
    if not rows:
        return
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(LedgerAccount).values(rows).on_conflict_do_nothing())


@dataclass(frozen=True)
class LockedAccount:
    id: int
    balance: int


def lock_accounts(session: Session, keys: list[AccountKey]) -> dict[AccountKey, LockedAccount]:
    """Get-or-create the accounts and lock them FOR UPDATE in id order (no deadlock cycles).
    Core statements, not the ORM: this is the hot path of every movement."""
    stmt, params, conn = _select_accounts_stmt(len(keys)), _key_params(keys), session.connection()
    found = {AccountKey(r.kind, r.owner, r.job_id): LockedAccount(r.id, r.balance)
             for r in conn.execute(stmt, params)}
    missing = [k for k in keys if k not in found]
    if missing:
        _insert_missing(session, missing)
        found = {AccountKey(r.kind, r.owner, r.job_id): LockedAccount(r.id, r.balance)
                 for r in conn.execute(stmt, params)}
    return found


BALANCE_UPDATE = (update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("account_id"))
                  .values(balance=bindparam("new_balance")))


# PostgreSQL: one statement, not an executemany (psycopg pipelines those: costly for 2 rows).
PG_BALANCE_UPDATE = text("""
UPDATE ledger_accounts AS a SET balance = v.balance
FROM unnest(CAST(:ids AS integer[]), CAST(:balances AS bigint[])) AS v(id, balance)
WHERE a.id = v.id
""")


def update_balances(session: Session, balances: dict[int, int]) -> None:
    if session.bind.dialect.name == "postgresql":
        session.connection().execute(PG_BALANCE_UPDATE, {"ids": list(balances),
                                                         "balances": list(balances.values())})
        return
    session.connection().execute(
        BALANCE_UPDATE, [{"account_id": k, "new_balance": v} for k, v in balances.items()])


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
