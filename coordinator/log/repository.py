"""SQL access for the public log."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.models import LogEntry, LogState

LOG_STATE_ID = 1


def lock_log_state(session: Session) -> LogState:
    stmt = select(LogState).where(LogState.id == LOG_STATE_ID).with_for_update()
    return session.execute(stmt).scalar_one()


def get_log_state(session: Session) -> LogState:
    return session.execute(select(LogState).where(LogState.id == LOG_STATE_ID)).scalar_one()


def get_entries(session: Session, start: int, end: int) -> list[LogEntry]:
    stmt = select(LogEntry).where(LogEntry.index >= start, LogEntry.index < end).order_by(LogEntry.index)
    return list(session.execute(stmt).scalars())


def get_leaf_hashes(session: Session, size: int) -> list[bytes]:
    stmt = select(LogEntry.leaf_hash).where(LogEntry.index < size).order_by(LogEntry.index)
    return [bytes.fromhex(h) for h in session.execute(stmt).scalars()]
