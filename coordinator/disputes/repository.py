"""SQL access for disputes."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import Assignment, Dispute, Job
from protocol.wire import DisputeStatus


def lock_dispute(session: Session, dispute_id: int) -> Dispute:
    stmt = select(Dispute).where(Dispute.id == dispute_id).with_for_update()
    found = session.execute(
        stmt, execution_options={"populate_existing": True}
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no dispute {dispute_id}")
    return found


def get_dispute(session: Session, dispute_id: int) -> Dispute:
    found = session.get(Dispute, dispute_id)
    if found is None:
        raise NotFound(f"no dispute {dispute_id}")
    return found


def get_open_dispute_ids(session: Session, limit: int) -> list[int]:
    stmt = (
        select(Dispute.id)
        .where(Dispute.status == DisputeStatus.OPEN)
        .order_by(Dispute.deadline)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def get_job_disputes(session: Session, job_id: str) -> list[Dispute]:
    return list(
        session.execute(
            select(Dispute).where(Dispute.job_id == job_id).order_by(Dispute.id)
        ).scalars()
    )


def get_party_disputes(session: Session, key: str, status: str | None, limit: int) -> list[Dispute]:
    """Disputes where `key` is the job's solver or the assignment's verifier."""
    stmt = (
        select(Dispute)
        .join(Job, Job.job_id == Dispute.job_id)
        .join(Assignment, Assignment.id == Dispute.assignment_id)
        .where((Job.solver == key) | (Assignment.verifier == key))
        .order_by(Dispute.id)
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(Dispute.status == status)
    return list(session.execute(stmt).scalars())


def get_overdue_open_dispute_ids(session: Session, now: float, limit: int) -> list[int]:
    stmt = (
        select(Dispute.id)
        .where(Dispute.status == DisputeStatus.OPEN, Dispute.deadline <= now)
        .order_by(Dispute.deadline)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())
