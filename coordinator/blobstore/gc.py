"""Garbage collection of blobs and abandoned uploads (`veritrain coordinator gc`; the rule is in
docs/coordinator.md, "Blob store"):

1. An upload session untouched for `upload_session_ttl_s` is abandoned: its row and staged file
   are deleted. A staged file with no session row, older than `blob_gc_grace_s`, too, and the
   store's own temporary files of puts that died midway.
2. A `blobs` row older than `blob_gc_grace_s` that nothing references is deleted: a checkpoint
   blob no checkpoint row names, a dataset no job's spec names, a state no dispute names. The
   row is locked and its references re-checked in the deleting transaction; job submission
   locks the dataset row it checks (coordinator.datasets.service.check_job_files_available), so
   a job can never be posted against a dataset being deleted.
3. A stored object with no `blobs` row, last written more than `blob_gc_grace_s` ago, is
   deleted (a commit whose transaction failed after its bytes were stored). The grace period is
   what keeps an upload in flight safe: its bytes are written moments before its row.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from coordinator.blobstore.base import KINDS
from coordinator.models import (
    BLOB_CHECKPOINT,
    BLOB_DATASET,
    Blob,
    Checkpoint,
    Dispute,
    Job,
)
from coordinator.runtime import Runtime
from coordinator.uploads import repository as uploads
from coordinator.uploads.staging import get_session_path


@dataclass(frozen=True)
class GcReport:
    sessions_expired: int
    staged_files_deleted: int
    rows_deleted: int
    objects_deleted: int


def collect_garbage(rt: Runtime, now: float | None = None) -> GcReport:
    now = time.time() if now is None else now
    grace_before = now - rt.settings.blob_gc_grace_s
    sessions = _expire_sessions(rt, now - rt.settings.upload_session_ttl_s)
    staged = _delete_stray_staged_files(rt, grace_before)
    staged += rt.blobs.delete_stale_temporaries(grace_before)
    rows = _delete_unreferenced_rows(rt, grace_before)
    objects = _delete_orphan_objects(rt, grace_before)
    return GcReport(sessions, staged, rows, objects)


def _expire_sessions(rt: Runtime, before: float) -> int:
    with rt.db.read() as session:
        expired = uploads.get_expired_session_ids(session, before)
    upload_dir = rt.settings.get_upload_dir()
    for upload_id in expired:
        rt.db.write(lambda s, u=upload_id: uploads.delete_session(s, u))
        get_session_path(upload_dir, upload_id).unlink(missing_ok=True)
    return len(expired)


def _delete_stray_staged_files(rt: Runtime, before: float) -> int:
    upload_dir = rt.settings.get_upload_dir()
    if not upload_dir.is_dir():
        return 0
    with rt.db.read() as session:
        live = uploads.get_all_session_ids(session)
    deleted = 0
    for path in upload_dir.iterdir():
        if path.stem not in live and _is_older(path, before):
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted


def _is_older(path: Path, before: float) -> bool:
    try:
        return path.stat().st_mtime < before
    except FileNotFoundError:
        return False


def _is_referenced(session: Session, kind: str, sha256: str) -> bool:
    if kind == BLOB_CHECKPOINT:
        query = exists().where(Checkpoint.blob_sha256 == sha256)
    elif kind == BLOB_DATASET:
        query = exists().where(Job.spec_json.contains(sha256))
    else:
        query = exists().where(Dispute.state_json.contains(sha256))
    return bool(session.execute(select(query)).scalar())


def _delete_unreferenced_rows(rt: Runtime, before: float) -> int:
    with rt.db.read() as session:
        candidates = session.execute(
            select(Blob.kind, Blob.sha256).where(Blob.created_at < before)
        ).all()
    deleted = 0
    for kind, sha256 in candidates:
        if rt.db.write(lambda s, k=kind, h=sha256: _delete_row_if_unreferenced(s, k, h)):
            rt.blobs.delete(kind, sha256)
            deleted += 1
    return deleted


def _delete_row_if_unreferenced(session: Session, kind: str, sha256: str) -> bool:
    stmt = select(Blob).where(Blob.kind == kind, Blob.sha256 == sha256).with_for_update()
    blob = session.execute(stmt).scalar_one_or_none()
    if blob is None or _is_referenced(session, kind, sha256):
        return False
    session.delete(blob)
    return True


def _delete_orphan_objects(rt: Runtime, before: float) -> int:
    deleted = 0
    for kind in KINDS:
        for sha256, modified in list(rt.blobs.iter_objects(kind)):
            if modified >= before:
                continue
            with rt.db.read() as session:
                if session.get(Blob, (kind, sha256)) is not None:
                    continue
            rt.blobs.delete(kind, sha256)
            deleted += 1
    return deleted
