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
    return (
        select(t.c.id, t.c.kind, t.c.owner, t.c.job_id, t.c.balance)
        .where(
            or_(
                *[
                    and_(
                        t.c.kind == bindparam(f"k{i}"),
                        t.c.owner == bindparam(f"o{i}"),
                        t.c.job_id == bindparam(f"j{i}"),
                    )
                    for i in range(count)
                ]
            )
        )
        .order_by(t.c.id)
        .with_for_update()
    )


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
    found = {
        AccountKey(r.kind, r.owner, r.job_id): LockedAccount(r.id, r.balance)
        for r in conn.execute(stmt, params)
    }
    missing = [k for k in keys if k not in found]
    if missing:
        _insert_missing(session, missing)
        found = {
            AccountKey(r.kind, r.owner, r.job_id): LockedAccount(r.id, r.balance)
            for r in conn.execute(stmt, params)
        }
    return found


# PostgreSQL: lock the accounts in id order and apply the deltas in one round trip — but only if
# every account exists and none would go negative; otherwise nothing changes and the caller sees
# the locked balances (to create missing accounts, or to raise InsufficientFunds).
PG_LOCK_AND_APPLY = text("""
WITH d AS (SELECT * FROM unnest(CAST(:kinds AS varchar[]), CAST(:owners AS varchar[]),
                                CAST(:jobs AS varchar[]), CAST(:deltas AS bigint[]))
           AS d(kind, owner, job_id, delta)),
locked AS (SELECT a.id, a.kind, a.owner, a.job_id, a.balance FROM ledger_accounts AS a
           WHERE (a.kind, a.owner, a.job_id) IN (SELECT kind, owner, job_id FROM d)
           ORDER BY a.id FOR UPDATE),
ok AS (SELECT count(*) = :n AND coalesce(bool_and(l.balance + d.delta >= 0 OR l.kind = 'mint'), false) AS ok
       FROM locked AS l JOIN d USING (kind, owner, job_id)),
applied AS (UPDATE ledger_accounts AS a SET balance = l.balance + d.delta
            FROM locked AS l JOIN d USING (kind, owner, job_id)
            WHERE a.id = l.id AND (SELECT ok FROM ok) RETURNING a.id)
SELECT l.id, l.kind, l.owner, l.job_id, l.balance, (SELECT count(*) FROM applied) AS applied FROM locked AS l
""")


def lock_and_apply(
    session: Session, deltas: list[tuple[AccountKey, int]]
) -> tuple[dict[AccountKey, LockedAccount], bool]:
    """PostgreSQL only: (balances before, by key; whether the deltas were applied)."""
    params = {
        "kinds": [k.kind for k, _ in deltas],
        "owners": [k.owner for k, _ in deltas],
        "jobs": [k.job_id for k, _ in deltas],
        "deltas": [d for _, d in deltas],
        "n": len(deltas),
    }
    rows = session.connection().execute(PG_LOCK_AND_APPLY, params).all()
    if len(rows) < len(deltas):
        _insert_missing(
            session,
            [
                k
                for k, _ in deltas
                if k not in {AccountKey(r.kind, r.owner, r.job_id) for r in rows}
            ],
        )
        rows = session.connection().execute(PG_LOCK_AND_APPLY, params).all()
    before = {AccountKey(r.kind, r.owner, r.job_id): LockedAccount(r.id, r.balance) for r in rows}
    return before, bool(rows) and rows[0].applied == len(deltas)


BALANCE_UPDATE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("account_id"))
    .values(balance=bindparam("new_balance"))
)


# PostgreSQL: one statement, not an executemany (psycopg pipelines those: costly for 2 rows).
PG_BALANCE_UPDATE = text("""
UPDATE ledger_accounts AS a SET balance = v.balance
FROM unnest(CAST(:ids AS integer[]), CAST(:balances AS bigint[])) AS v(id, balance)
WHERE a.id = v.id
""")


def update_balances(session: Session, balances: dict[int, int]) -> None:
    if session.bind.dialect.name == "postgresql":
        session.connection().execute(
            PG_BALANCE_UPDATE, {"ids": list(balances), "balances": list(balances.values())}
        )
        return
    session.connection().execute(
        BALANCE_UPDATE, [{"account_id": k, "new_balance": v} for k, v in balances.items()]
    )


def get_balance(session: Session, key: AccountKey) -> int:
    stmt = select(LedgerAccount.balance).where(
        LedgerAccount.kind == key.kind,
        LedgerAccount.owner == key.owner,
        LedgerAccount.job_id == key.job_id,
    )
    return session.execute(stmt).scalar_one_or_none() or 0


def get_accounts_page(session: Session, after_id: int, limit: int) -> list[LedgerAccount]:
    stmt = (
        select(LedgerAccount)
        .where(LedgerAccount.id > after_id)
        .order_by(LedgerAccount.id)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def get_owner_accounts(session: Session, owner: str) -> list[LedgerAccount]:
    stmt = select(LedgerAccount).where(LedgerAccount.owner == owner).order_by(LedgerAccount.id)
    return list(session.execute(stmt).scalars())
