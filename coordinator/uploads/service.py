"""Upload sessions and the commit of staged bytes, shared by the resumable session API and the
single-request PUTs.

Protocol (docs/coordinator.md, "Blob store"): POST /v1/uploads declares kind, SHA-256, size and
target (the same declaration by the same key finds its open session again: that is how a client
resumes); PUT /v1/uploads/{id}?offset=N appends a signed part at exactly the committed count;
GET tells that count; POST /v1/uploads/{id}/commit checks the SHA-256, the kind's own rules
(a dataset parses; a checkpoint matches the job's layout, step and committed trajectory),
stores the blob and records it, in the same transaction that ends the session.
"""

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from coordinator.auth import (
    SignedRequest,
    call_burning_nonce_on_error,
    check_signed_headers,
    execute_signed,
    get_streamed_signed_request,
)
from coordinator.blobstore.errors import BlobMismatch
from coordinator.datasets import service as datasets
from coordinator.disputes import service as disputes
from coordinator.errors import Forbidden, InvalidState, PayloadTooLarge, QuotaExceeded
from coordinator.jobs import checkpoints
from coordinator.jobs import repository as jobs_repository
from coordinator.models import BLOB_CHECKPOINT, BLOB_DATASET, BLOB_STATE, Job, UploadSession
from coordinator.runtime import Runtime
from coordinator.uploads import repository
from coordinator.uploads.digests import RunningDigest
from coordinator.uploads.schemas import CreateUploadRequest, UploadView
from coordinator.uploads.staging import (
    check_declared_length,
    compute_file_sha256,
    get_session_path,
    open_staged,
    receive_body,
    temporary_staged,
)
from coordinator.verification import service as verification
from protocol.errors import InvalidInput
from protocol.state import compute_encoded_size
from protocol.wire import JobState

# coordinator.transitions.process_checkpoint_upload, passed in by the entry points (endpoints):
# slices never import the transitions back (tests/test_import_graph.py)
RecordCheckpoint = Callable[..., object]
MAX_OPEN_UPLOADS_PER_KEY = 64  # staged bytes are disk: one key holds a bounded few


@dataclass(frozen=True)
class Target:
    """Where a checkpoint upload goes, or the dispute a state upload is owed to (None fields
    otherwise; all None for a dataset)."""

    job_id: str | None = None
    index: int | None = None
    step: int | None = None
    proof: tuple[str, ...] = ()
    dispute_id: int | None = None

    def to_json(self) -> str:
        if self.dispute_id is not None:
            return json.dumps({"dispute_id": self.dispute_id})
        if self.job_id is None:
            return "{}"
        body = {"job_id": self.job_id, "index": self.index, "step": self.step, "proof": self.proof}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "Target":
        body = json.loads(text)
        return Target(
            body.get("job_id"),
            body.get("index"),
            body.get("step"),
            tuple(body.get("proof", ())),
            body.get("dispute_id"),
        )


def get_target(body: CreateUploadRequest) -> Target:
    fields = (body.job_id, body.index, body.step)
    if body.kind == BLOB_CHECKPOINT:
        if any(f is None for f in fields) or body.dispute_id is not None:
            raise InvalidInput("a checkpoint upload names its job_id, index and step", "job_id")
        return Target(body.job_id, body.index, body.step, tuple(body.proof))
    if any(f is not None for f in fields) or body.proof:
        raise InvalidInput(f"a {body.kind} upload names no job, index, step or proof", "kind")
    if (body.kind == BLOB_STATE) != (body.dispute_id is not None):
        raise InvalidInput("a state upload, and only a state upload, names its dispute_id", "kind")
    return Target(dispute_id=body.dispute_id)


def get_upload_view(row: UploadSession) -> UploadView:
    target = Target.from_json(row.target)
    return UploadView(
        id=row.id,
        kind=row.kind,
        sha256=row.sha256,
        size=row.size,
        received=row.received,
        owner=row.owner,
        job_id=target.job_id,
        index=target.index,
        step=target.step,
        dispute_id=target.dispute_id,
    )


def process_create(
    session: Session, rt: Runtime, owner: str, body: CreateUploadRequest
) -> UploadView:
    """Open a session, or find the open one with the same declaration (a resume)."""
    target = get_target(body)
    if body.size > rt.settings.max_checkpoint_body:  # a field's value, not this body: 422
        raise InvalidInput(
            f"{body.size} bytes is over this coordinator's {rt.settings.max_checkpoint_body}",
            "size",
        )
    existing = repository.find_open_session(
        session, owner, body.kind, body.sha256, body.size, target.to_json()
    )
    if existing is not None:
        return get_upload_view(existing)
    if repository.count_open_sessions(session, owner) >= MAX_OPEN_UPLOADS_PER_KEY:
        raise QuotaExceeded(f"this key holds {MAX_OPEN_UPLOADS_PER_KEY} open upload sessions")
    if body.kind == BLOB_DATASET:
        _check_dataset_session(session, rt, owner, body.size)
    else:  # before any byte is sent
        job = (
            disputes.check_state_owed(session, owner, target.dispute_id)
            if body.kind == BLOB_STATE
            else _check_checkpoint_session(session, owner, target)
        )
        _check_state_size(rt, session, job, body.size)
    now = rt.clock.now()
    row = UploadSession(
        id=secrets.token_hex(16),
        owner=owner,
        kind=body.kind,
        sha256=body.sha256,
        size=body.size,
        received=0,
        target=target.to_json(),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return get_upload_view(row)


def _check_dataset_session(session: Session, rt: Runtime, owner: str, size: int) -> None:
    datasets.check_can_store(session, rt, owner)
    datasets.check_quota(
        session, rt, owner, repository.get_pending_dataset_bytes(session, owner) + size
    )


def _check_state_size(rt: Runtime, session: Session, job: Job, size: int) -> None:
    """A state of a job has exactly one size (its canonical encoding): a declaration of any
    other is refused, so nobody can make a replica stage more than a real state's bytes."""
    expected = compute_encoded_size(checkpoints.get_state_layout(rt, session, job))
    if size != expected:
        raise InvalidInput(f"a state of this job is exactly {expected} bytes, not {size}", "size")


def _check_checkpoint_session(session: Session, owner: str, target: Target) -> Job:
    job = jobs_repository.get_job(session, target.job_id)
    if owner != job.solver:
        raise Forbidden("only the job's solver uploads its checkpoints")
    if job.state != JobState.VERIFYING:
        raise InvalidState(f"job is {job.state}: checkpoints are uploaded while verifying")
    if target.index >= job.num_checkpoints:
        raise InvalidInput(f"the job has {job.num_checkpoints} checkpoints", "index")
    if jobs_repository.get_checkpoint(session, job.job_id, target.index) is not None:
        raise InvalidState(f"checkpoint {target.index} is stored already")
    verification.check_checkpoint_wanted(session, job, target.index)
    return job


def check_append(row: UploadSession, who: str, offset: int) -> None:
    if row.owner != who:
        raise Forbidden("this upload session belongs to another key")
    if row.received != offset:
        raise InvalidState(
            f"offset {offset} is not where this upload stands: {row.received} bytes are received"
        )


def process_append(
    session: Session, rt: Runtime, who: str, upload_id: str, offset: int, count: int
) -> UploadView:
    row = repository.lock_session(session, upload_id)
    check_append(row, who, offset)
    if offset + count > row.size:
        raise PayloadTooLarge(f"the upload declared {row.size} bytes; this part would pass it")
    row.received = offset + count
    row.updated_at = rt.clock.now()
    return get_upload_view(row)


# --- staged bytes to the store ----------------------------------------------------------------


def prepare_dataset(
    rt: Runtime, path: Path, sha256: str, running: RunningDigest | None = None
) -> int:
    """Outside any transaction: the staged bytes hash to `sha256` (as they arrived, or read
    now) and parse as a dataset."""
    known = running.sha256_hex() if running is not None else None
    actual, size = (known, path.stat().st_size) if known else compute_file_sha256(path)
    if actual != sha256:
        raise BlobMismatch(f"the {size} bytes uploaded hash to {actual}, not to {sha256}")
    datasets.check_dataset_file(rt, path)
    return size


def prepare_checkpoint(
    rt: Runtime, path: Path, job_id: str, step: int, running: RunningDigest | None = None
) -> checkpoints.DecodedCheckpoint:
    """Outside any transaction: the job exists (a cheap read first, so an upload for no job is
    not hashed at all) and the staged state matches its layout and `step`."""
    with rt.db.read() as session:
        job = jobs_repository.get_job(session, job_id)
        layout = checkpoints.get_state_layout(rt, session, job)
    streamed = running.result() if running is not None else None
    return checkpoints.compute_staged_checkpoint(path, step, layout, streamed)


def commit_dataset(
    rt: Runtime,
    signed: SignedRequest,
    path: Path,
    sha256: str,
    upload_id: str | None = None,
    running: RunningDigest | None = None,
) -> Response:
    size = call_burning_nonce_on_error(rt, signed, prepare_dataset, rt, path, sha256, running)
    call_burning_nonce_on_error(rt, signed, rt.blobs.put_file, BLOB_DATASET, sha256, path, True)

    def record(session: Session) -> dict:
        _end_session(session, upload_id, signed.public_key)
        return datasets.process_upload(session, rt, signed.public_key, sha256, size)

    return execute_signed(rt, signed, record)


def commit_checkpoint(
    rt: Runtime,
    signed: SignedRequest,
    path: Path,
    target: Target,
    record_checkpoint: RecordCheckpoint,
    declared_sha256: str | None = None,
    upload_id: str | None = None,
    running: RunningDigest | None = None,
) -> Response:
    proof = [bytes.fromhex(h) for h in target.proof]
    ckpt = call_burning_nonce_on_error(
        rt, signed, prepare_checkpoint, rt, path, target.job_id, target.step, running
    )
    if declared_sha256 is not None and ckpt.sha256 != declared_sha256:
        call_burning_nonce_on_error(rt, signed, _raise_mismatch, ckpt.sha256, declared_sha256)
    call_burning_nonce_on_error(
        rt, signed, rt.blobs.put_file, BLOB_CHECKPOINT, ckpt.sha256, path, True
    )  # prepare_checkpoint hashed this very file, under its lock

    def record(session: Session):
        _end_session(session, upload_id, signed.public_key)
        return record_checkpoint(
            session, rt, signed.public_key, target.job_id, target.index, ckpt, proof
        )

    return execute_signed(rt, signed, record)


def commit_state(
    rt: Runtime,
    signed: SignedRequest,
    path: Path,
    dispute_id: int,
    declared_sha256: str | None = None,
    upload_id: str | None = None,
    running: RunningDigest | None = None,
) -> Response:
    """A dispute's agreed state: checked while streamed from the staged file (the pinned step's
    root, the job's layout), stored, then recorded; the replica never decodes it."""
    streamed = running.result() if running is not None else None
    state = call_burning_nonce_on_error(
        rt, signed, disputes.compute_staged_state, rt, path, dispute_id, streamed
    )
    if declared_sha256 is not None and state.sha256 != declared_sha256:
        call_burning_nonce_on_error(rt, signed, _raise_mismatch, state.sha256, declared_sha256)
    call_burning_nonce_on_error(rt, signed, rt.blobs.put_file, BLOB_STATE, state.sha256, path, True)

    def record(session: Session):
        _end_session(session, upload_id, signed.public_key)
        return disputes.process_dispute_state(session, rt, signed.public_key, dispute_id, state)

    return execute_signed(rt, signed, record)


async def commit_single_put(request: Request, rt: Runtime, commit: Callable, *args) -> Response:
    """A one-request upload: its body streamed to a staging file (hashed on the way, refused
    past `max_single_put_body`), its signature checked against that hash, then
    `commit(rt, signed, path, *args)` on the thread pool."""
    check_signed_headers(request)
    limit = min(rt.settings.max_checkpoint_body, rt.settings.max_single_put_body)
    check_declared_length(request, limit)
    with temporary_staged(rt.settings.get_upload_dir()) as (path, handle):
        body_sha256, _ = await receive_body(request, handle, limit, rt.receiving)
        signed = get_streamed_signed_request(request, body_sha256)
        return await run_in_threadpool(commit, rt, signed, path, *args)


def _raise_mismatch(actual: str, declared: str) -> None:
    raise BlobMismatch(f"the bytes uploaded hash to {actual}, not to the declared {declared}")


def _end_session(session: Session, upload_id: str | None, who: str) -> None:
    if upload_id is None:
        return
    row = repository.lock_session(session, upload_id)
    if row.owner != who:
        raise Forbidden("this upload session belongs to another key")
    repository.delete_session(session, upload_id)


def commit_session(
    rt: Runtime, signed: SignedRequest, upload_id: str, record_checkpoint: RecordCheckpoint
) -> Response:
    """Check the complete session's bytes and store them; a session whose bytes do not hash to
    its declaration is discarded (its uploader lied or lost bytes: it starts again)."""
    with rt.db.read() as session:
        row = repository.get_session(session, upload_id)
        kind, sha256, target = row.kind, row.sha256, Target.from_json(row.target)
        owner, size, received = row.owner, row.size, row.received
    if owner != signed.public_key:
        call_burning_nonce_on_error(rt, signed, _raise_forbidden)
    if received != size:
        call_burning_nonce_on_error(rt, signed, _raise_incomplete, received, size)
    path = get_session_path(rt.settings.get_upload_dir(), upload_id)
    with open_staged(path):  # no append while the bytes are checked and stored
        running = rt.upload_digests.take(upload_id)  # the hashes taken as the parts arrived
        try:
            if kind == BLOB_DATASET:
                response = commit_dataset(rt, signed, path, sha256, upload_id, running)
            elif kind == BLOB_STATE:
                response = commit_state(
                    rt, signed, path, target.dispute_id, sha256, upload_id, running
                )
            else:
                response = commit_checkpoint(
                    rt, signed, path, target, record_checkpoint, sha256, upload_id, running
                )
        except BlobMismatch:
            discard_session(rt, upload_id)
            raise
        path.unlink(missing_ok=True)  # under the lock: a late append finds neither row nor file
    return response


def _raise_forbidden() -> None:
    raise Forbidden("this upload session belongs to another key")


def _raise_incomplete(received: int, size: int) -> None:
    raise InvalidState(f"{received} of the {size} bytes declared are received: upload the rest")


def discard_session(rt: Runtime, upload_id: str) -> None:
    rt.db.write(lambda s: repository.delete_session(s, upload_id))
    get_session_path(rt.settings.get_upload_dir(), upload_id).unlink(missing_ok=True)
