"""SQL access for upload sessions."""

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import UploadSession


def get_session(session: Session, upload_id: str) -> UploadSession:
    row = session.get(UploadSession, upload_id)
    if row is None:
        raise NotFound(f"no upload session {upload_id}")
    return row


def lock_session(session: Session, upload_id: str) -> UploadSession:
    stmt = select(UploadSession).where(UploadSession.id == upload_id).with_for_update()
    row = session.execute(stmt, execution_options={"populate_existing": True}).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no upload session {upload_id}")
    return row


def find_open_session(
    session: Session, owner: str, kind: str, sha256: str, size: int, target: str
) -> UploadSession | None:
    stmt = select(UploadSession).where(
        UploadSession.owner == owner,
        UploadSession.kind == kind,
        UploadSession.sha256 == sha256,
        UploadSession.size == size,
        UploadSession.target == target,
    )
    return session.execute(stmt.limit(1)).scalar_one_or_none()


def count_open_sessions(session: Session, owner: str) -> int:
    stmt = select(func.count()).where(UploadSession.owner == owner)
    return int(session.execute(stmt).scalar_one())


def get_pending_dataset_bytes(session: Session, owner: str) -> int:
    stmt = select(func.coalesce(func.sum(UploadSession.size), 0)).where(
        UploadSession.owner == owner, UploadSession.kind == "dataset"
    )
    return int(session.execute(stmt).scalar_one())


def get_expired_session_ids(session: Session, before: float, limit: int = 1000) -> list[str]:
    stmt = select(UploadSession.id).where(UploadSession.updated_at < before).limit(limit)
    return list(session.execute(stmt).scalars())


def get_all_session_ids(session: Session) -> set[str]:
    return set(session.execute(select(UploadSession.id)).scalars())


def delete_session(session: Session, upload_id: str) -> None:
    session.execute(delete(UploadSession).where(UploadSession.id == upload_id))
