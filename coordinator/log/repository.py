"""SQL access for the public log."""

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from coordinator.models import LogEntry, LogState

LOG_STATE_ID = 1


def lock_log_state(session: Session) -> LogState:
    stmt = select(LogState).where(LogState.id == LOG_STATE_ID).with_for_update()
    return session.execute(stmt).scalar_one()


# Prebuilt Core statements: every value-moving request runs these three.
_STATE = LogState.__table__
HEAD_SELECT = (select(_STATE.c.size, _STATE.c.last_hash, _STATE.c.frontier)
               .where(_STATE.c.id == LOG_STATE_ID).with_for_update())
HEAD_UPDATE = update(_STATE).where(_STATE.c.id == LOG_STATE_ID).values(
    size=bindparam("new_size"), last_hash=bindparam("new_hash"), frontier=bindparam("new_frontier"))
ENTRY_INSERT = insert(LogEntry.__table__)


def lock_log_head(session: Session) -> tuple[int, str, str]:
    """(size, last hash, frontier) under a row lock, as plain values."""
    return tuple(session.connection().execute(HEAD_SELECT).one())


def insert_entry(session: Session, index: int, kind: str, body: str, leaf_hash: str, signature: str) -> None:
    session.connection().execute(ENTRY_INSERT, {"idx": index, "kind": kind, "body": body,
                                                "leaf_hash": leaf_hash, "signature": signature})


def update_log_head(session: Session, size: int, last_hash: str, frontier: str) -> None:
    session.connection().execute(HEAD_UPDATE, {"new_size": size, "new_hash": last_hash,
                                               "new_frontier": frontier})


def get_log_state(session: Session) -> LogState:
    return session.execute(select(LogState).where(LogState.id == LOG_STATE_ID)).scalar_one()


def get_entries(session: Session, start: int, end: int) -> list[LogEntry]:
    stmt = select(LogEntry).where(LogEntry.index >= start, LogEntry.index < end).order_by(LogEntry.index)
    return list(session.execute(stmt).scalars())


def get_leaf_hashes(session: Session, size: int) -> list[bytes]:
    stmt = select(LogEntry.leaf_hash).where(LogEntry.index < size).order_by(LogEntry.index)
    return [bytes.fromhex(h) for h in session.execute(stmt).scalars()]
