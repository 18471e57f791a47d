"""SQL access for verifiers and assignments."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import Assignment, LedgerAccount, Verifier


def get_verifier(session: Session, public_key: str) -> Verifier | None:
    return session.get(Verifier, public_key)


def get_verifier_stakes(session: Session) -> list[tuple[Verifier, int]]:
    """Every registered verifier with its standing stake (grows with verifiers, not history)."""
    stmt = (select(Verifier, LedgerAccount.balance)
            .join(LedgerAccount, (LedgerAccount.owner == Verifier.public_key)
                  & (LedgerAccount.kind == "stake") & (LedgerAccount.job_id == ""))
            .order_by(Verifier.public_key))
    return [(v, balance) for v, balance in session.execute(stmt).all()]


def lock_assignment(session: Session, assignment_id: int) -> Assignment:
    stmt = select(Assignment).where(Assignment.id == assignment_id).with_for_update()
    found = session.execute(stmt, execution_options={"populate_existing": True}).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no assignment {assignment_id}")
    return found


def get_job_assignments(session: Session, job_id: str) -> list[Assignment]:
    stmt = select(Assignment).where(Assignment.job_id == job_id).order_by(Assignment.id)
    return list(session.execute(stmt).scalars())


def get_verifier_assignments(session: Session, verifier: str, limit: int = 200) -> list[Assignment]:
    stmt = (select(Assignment).where(Assignment.verifier == verifier)
            .order_by(Assignment.id.desc()).limit(limit))
    return list(session.execute(stmt).scalars())


def get_overdue_assignments(session: Session, states: tuple[str, ...], now: float, limit: int) -> list[Assignment]:
    stmt = (select(Assignment).where(Assignment.state.in_(states), Assignment.deadline <= now)
            .order_by(Assignment.deadline).limit(limit))
    return list(session.execute(stmt).scalars())
