"""SQL access for the public log."""

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from coordinator.models import LogEntry, LogState, Posting

LOG_STATE_ID = 1


def lock_log_state(session: Session) -> LogState:
    stmt = select(LogState).where(LogState.id == LOG_STATE_ID).with_for_update()
    return session.execute(stmt).scalar_one()


# Prebuilt Core statements: every value-moving request runs these three.
_STATE = LogState.__table__
HEAD_SELECT = (
    select(_STATE.c.size, _STATE.c.last_hash, _STATE.c.frontier)
    .where(_STATE.c.id == LOG_STATE_ID)
    .with_for_update()
)
HEAD_UPDATE = (
    update(_STATE)
    .where(_STATE.c.id == LOG_STATE_ID)
    .values(
        size=bindparam("new_size"),
        last_hash=bindparam("new_hash"),
        frontier=bindparam("new_frontier"),
    )
)
ENTRY_INSERT = insert(LogEntry.__table__)
POSTING_INSERT = insert(Posting.__table__)


def lock_log_head(session: Session) -> tuple[int, str, str]:
    """(size, last hash, frontier) under a row lock, as plain values."""
    return tuple(session.connection().execute(HEAD_SELECT).one())


def insert_entry(
    session: Session, idx: int, kind: str, body: str, leaf_hash: str, signature: str
) -> None:
    session.connection().execute(
        ENTRY_INSERT,
        {"idx": idx, "kind": kind, "body": body, "leaf_hash": leaf_hash, "signature": signature},
    )


def update_log_head(session: Session, size: int, last_hash: str, frontier: str) -> None:
    session.connection().execute(
        HEAD_UPDATE, {"new_size": size, "new_hash": last_hash, "new_frontier": frontier}
    )


# PostgreSQL: entry, head and postings in one round trip, because the log-head lock is held
# until commit and every round trip inside it is paid by every other writer too.
PG_APPEND = text("""
WITH entry AS (INSERT INTO log_entries (idx, kind, body, leaf_hash, signature)
               VALUES (:idx, :kind, :body, :leaf_hash, :signature)),
     head AS (UPDATE log_state SET size = :new_size, last_hash = :new_hash, frontier = :new_frontier
              WHERE id = 1)
INSERT INTO postings (log_index, account_id, delta)
SELECT :idx, account_id, delta
FROM unnest(CAST(:account_ids AS integer[]), CAST(:deltas AS bigint[])) AS p(account_id, delta)
""")


def write_entry(
    session: Session, entry: dict, head: tuple[int, str, str], postings: list[tuple[int, int]]
) -> None:
    """Insert one log entry, move the head, and record the movement's postings."""
    size, last_hash, frontier = head
    if session.bind.dialect.name == "postgresql":
        session.connection().execute(
            PG_APPEND,
            {
                **entry,
                "new_size": size,
                "new_hash": last_hash,
                "new_frontier": frontier,
                "account_ids": [a for a, _ in postings],
                "deltas": [d for _, d in postings],
            },
        )
        return
    insert_entry(session, **entry)
    update_log_head(session, size, last_hash, frontier)
    if postings:
        session.connection().execute(
            POSTING_INSERT,
            [{"log_index": entry["idx"], "account_id": a, "delta": d} for a, d in postings],
        )


def get_log_state(session: Session) -> LogState:
    return session.execute(select(LogState).where(LogState.id == LOG_STATE_ID)).scalar_one()


def get_entries(session: Session, start: int, end: int) -> list[LogEntry]:
    stmt = (
        select(LogEntry)
        .where(LogEntry.index >= start, LogEntry.index < end)
        .order_by(LogEntry.index)
    )
    return list(session.execute(stmt).scalars())


def get_leaf_hashes(session: Session, size: int) -> list[bytes]:
    stmt = select(LogEntry.leaf_hash).where(LogEntry.index < size).order_by(LogEntry.index)
    return [bytes.fromhex(h) for h in session.execute(stmt).scalars()]
