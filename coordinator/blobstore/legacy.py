"""Moving the bytes of rows written before revision 0007 out of SQL into the blob store, at
start-up (the migration cannot: it does not know where the store is; see its docstring).

One row per transaction: its bytes are put (and verified) in the store, then NULLed; a start
that is interrupted resumes with the rows left. A row whose bytes do not hash to its address
is left in SQL and logged: it was corrupt before it was ever moved.
"""

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.blobstore.base import BlobStore
from coordinator.blobstore.errors import BlobMismatch
from coordinator.db import Database
from coordinator.models import Blob

log = logging.getLogger("veritrain.coordinator.blobstore")


def export_legacy_blobs(db: Database, store: BlobStore) -> int:
    """Returns how many rows were moved."""
    with db.read() as session:
        keys = session.execute(
            select(Blob.kind, Blob.sha256).where(Blob.legacy_data.is_not(None))
        ).all()
    moved = 0
    for kind, sha256 in keys:
        moved += db.write(lambda s, k=kind, h=sha256: _export_one(s, store, k, h))
    if moved:
        log.info("moved %d blobs from SQL into the blob store", moved)
    return moved


def _export_one(session: Session, store: BlobStore, kind: str, sha256: str) -> int:
    stmt = select(Blob).where(Blob.kind == kind, Blob.sha256 == sha256).with_for_update()
    blob = session.execute(stmt).scalar_one_or_none()
    if blob is None or blob.legacy_data is None:
        return 0
    try:
        store.put_stream(kind, sha256, [blob.legacy_data])
    except BlobMismatch:
        log.error("blob %s/%s in SQL does not hash to its address: left in SQL", kind, sha256)
        return 0
    blob.legacy_data = None
    return 1
