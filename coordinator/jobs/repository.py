"""SQL access for jobs, bids and checkpoints. Every lookup on the hot path is by key or index."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import BLOB_CHECKPOINT, BLOB_STATE, Bid, Blob, Checkpoint, Job


def lock_job(session: Session, job_id: str) -> Job:
    stmt = select(Job).where(Job.job_id == job_id).with_for_update()
    job = session.execute(stmt, execution_options={"populate_existing": True}).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def get_job(session: Session, job_id: str) -> Job:
    job = session.execute(select(Job).where(Job.job_id == job_id)).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def is_existing_job(session: Session, job_id: str) -> bool:
    return session.execute(select(Job.id).where(Job.job_id == job_id)).first() is not None


def get_jobs_page(
    session: Session, state: str | None, after: int, limit: int, profile: str | None = None
) -> list[Job]:
    stmt = select(Job).where(Job.id > after)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if profile is not None:
        stmt = stmt.where(Job.profile_label == profile)
    return list(session.execute(stmt.order_by(Job.id).limit(limit)).scalars())


def get_overdue_job_ids(session: Session, state: str, now: float, limit: int) -> list[str]:
    stmt = (
        select(Job.job_id)
        .where(Job.state == state, Job.deadline <= now)
        .order_by(Job.deadline)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def get_bid(session: Session, job_id: str, bidder: str) -> Bid | None:
    return session.execute(
        select(Bid).where(Bid.job_id == job_id, Bid.bidder == bidder)
    ).scalar_one_or_none()


def get_bids(session: Session, job_id: str) -> list[Bid]:
    return list(session.execute(select(Bid).where(Bid.job_id == job_id).order_by(Bid.id)).scalars())


def get_checkpoint_indices(session: Session, job_id: str) -> set[int]:
    stmt = select(Checkpoint.index).where(Checkpoint.job_id == job_id)
    return set(session.execute(stmt).scalars())


def get_checkpoint(session: Session, job_id: str, index: int) -> Checkpoint | None:
    return session.get(Checkpoint, (job_id, index))


def get_blob(session: Session, sha256: str, kind: str = BLOB_CHECKPOINT) -> Blob | None:
    """The bytes stored under `sha256` in namespace `kind`; other namespaces are invisible."""
    return session.get(Blob, (kind, sha256))


def get_game_state_blob(session: Session, sha256: str) -> Blob | None:
    """A dispute's pinned state: one a party supplied, or the checkpoint that opened the game."""
    return get_blob(session, sha256, BLOB_STATE) or get_blob(session, sha256, BLOB_CHECKPOINT)


def add_blob_if_missing(
    session: Session,
    sha256: str,
    size: int,
    kind: str = BLOB_CHECKPOINT,
    uploader: str | None = None,
    created_at: float = 0.0,
) -> None:
    """The ledger's row for bytes already in the blob store (put them there first)."""
    if get_blob(session, sha256, kind) is None:
        session.add(
            Blob(kind=kind, sha256=sha256, size=size, uploader=uploader, created_at=created_at)
        )
        session.flush()


def get_stored_bytes(session: Session, uploader: str, kind: str) -> int:
    """Bytes in namespace `kind` that `uploader` stored first (one indexed sum)."""
    stmt = select(func.coalesce(func.sum(Blob.size), 0)).where(
        Blob.uploader == uploader, Blob.kind == kind
    )
    return int(session.execute(stmt).scalar_one())


def count_open_jobs(session: Session, submitter: str, final_states: frozenset[str]) -> int:
    stmt = select(func.count()).where(Job.submitter == submitter, Job.state.not_in(final_states))
    return int(session.execute(stmt).scalar_one())
