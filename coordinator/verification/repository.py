"""SQL access for verifiers and assignments."""

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.ledger.accounts import STAKE
from coordinator.models import Assignment, LedgerAccount, Verifier, VerifierProfile


def get_verifier(session: Session, public_key: str) -> Verifier | None:
    return session.get(Verifier, public_key)


def get_profile_verifier_stakes(
    session: Session, profile_label: str
) -> list[tuple[str, int, int | None]]:
    """(key, standing stake, declared capacity) of every verifier registered for
    `profile_label`, by key: one indexed query, however many verifiers are registered for other
    profiles. The stake and the capacity are correlated lookups by full key rather than outer
    joins: with a join, PostgreSQL merge-joins against every stake account (its cost grows with
    all verifiers)."""
    standing_stake = (
        select(LedgerAccount.balance)
        .where(
            LedgerAccount.kind == STAKE,
            LedgerAccount.owner == VerifierProfile.public_key,
            LedgerAccount.job_id == "",
        )
        .correlate(VerifierProfile)
        .scalar_subquery()
    )
    capacity = (
        select(Verifier.max_state_bytes)
        .where(Verifier.public_key == VerifierProfile.public_key)
        .correlate(VerifierProfile)
        .scalar_subquery()
    )
    stmt = (
        select(VerifierProfile.public_key, func.coalesce(standing_stake, 0), capacity)
        .where(VerifierProfile.profile_label == profile_label)
        .order_by(VerifierProfile.public_key)
    )
    return [(key, balance, most) for key, balance, most in session.execute(stmt)]


def set_verifier_profiles(session: Session, public_key: str, profiles: list[str]) -> None:
    """Make the verifier's rows in verifier_profiles exactly `profiles`."""
    stored = set(
        session.execute(
            select(VerifierProfile.profile_label).where(VerifierProfile.public_key == public_key)
        ).scalars()
    )
    wanted = set(profiles)
    if stored - wanted:
        session.execute(
            delete(VerifierProfile).where(
                VerifierProfile.public_key == public_key,
                VerifierProfile.profile_label.in_(stored - wanted),
            )
        )
    session.add_all(
        VerifierProfile(public_key=public_key, profile_label=label)
        for label in sorted(wanted - stored)
    )


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
