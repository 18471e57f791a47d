"""SQL access for disputes."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import Dispute


def lock_dispute(session: Session, dispute_id: int) -> Dispute:
    stmt = select(Dispute).where(Dispute.id == dispute_id).with_for_update()
    found = session.execute(stmt, execution_options={"populate_existing": True}).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no dispute {dispute_id}")
    return found


def get_dispute(session: Session, dispute_id: int) -> Dispute:
    found = session.get(Dispute, dispute_id)
    if found is None:
        raise NotFound(f"no dispute {dispute_id}")
    return found


def get_open_dispute_ids(session: Session, limit: int) -> list[int]:
    stmt = select(Dispute.id).where(Dispute.status == "open").order_by(Dispute.deadline).limit(limit)
    return list(session.execute(stmt).scalars())
