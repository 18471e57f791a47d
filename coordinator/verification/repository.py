"""SQL access for verifiers and assignments."""

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.ledger.accounts import STAKE
from coordinator.models import Assignment, LedgerAccount, Verifier


def get_verifier(session: Session, public_key: str) -> Verifier | None:
    return session.get(Verifier, public_key)


def get_verifier_stakes(session: Session) -> list[tuple[Verifier, int]]:
    """Every registered verifier with its standing stake (grows with verifiers, not history):
    each stake is looked up by its full account key, never by scanning stake accounts."""
    verifiers = list(session.execute(select(Verifier).order_by(Verifier.public_key)).scalars())
    stake_balance = (
        select(LedgerAccount.balance)
        .where(
            LedgerAccount.kind == STAKE,
            LedgerAccount.owner == bindparam("owner"),
            LedgerAccount.job_id == "",
        )
        .scalar_subquery()
    )
    return [
        (v, session.execute(select(stake_balance), {"owner": v.public_key}).scalar() or 0)
        for v in verifiers
    ]


def lock_assignment(session: Session, assignment_id: int) -> Assignment:
    stmt = select(Assignment).where(Assignment.id == assignment_id).with_for_update()
    found = session.execute(
        stmt, execution_options={"populate_existing": True}
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no assignment {assignment_id}")
    return found


def get_job_assignments(session: Session, job_id: str) -> list[Assignment]:
    stmt = select(Assignment).where(Assignment.job_id == job_id).order_by(Assignment.id)
    return list(session.execute(stmt).scalars())


def get_verifier_assignments(session: Session, verifier: str, limit: int = 200) -> list[Assignment]:
    stmt = (
        select(Assignment)
        .where(Assignment.verifier == verifier)
        .order_by(Assignment.id.desc())
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def get_overdue_assignments(
    session: Session, states: tuple[str, ...], now: float, limit: int
) -> list[Assignment]:
    stmt = (
        select(Assignment)
        .where(Assignment.state.in_(states), Assignment.deadline <= now)
        .order_by(Assignment.deadline)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def is_verifier_busy(session: Session, verifier: str, active_states: tuple[str, ...]) -> bool:
    stmt = (
        select(Assignment.id)
        .where(Assignment.verifier == verifier, Assignment.state.in_(active_states))
        .limit(1)
    )
    return session.execute(stmt).first() is not None
