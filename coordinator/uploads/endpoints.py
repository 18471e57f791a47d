"""Resumable uploads: create a session, append signed parts at the committed offset, commit."""

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from coordinator.auth import (
    Signed,
    check_signed_headers,
    execute_signed,
    get_runtime,
    get_streamed_signed_request,
    get_unsigned_payload_request,
)
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import EmptyRequest
from coordinator.transitions import process_checkpoint_upload
from coordinator.uploads import repository, service
from coordinator.uploads.schemas import MAX_DECLARED_SIZE, CreateUploadRequest, UploadView
from coordinator.uploads.staging import (
    check_declared_length,
    get_session_path,
    open_staged,
    receive_body,
)
from protocol.errors import VeritrainError
from protocol.wire import HEADER_KEY

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
RT = Annotated[Runtime, Depends(get_runtime)]
UploadIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.post("", response_model=UploadView, responses=WRITE_PROBLEMS)
def post_upload(body: CreateUploadRequest, signed: Signed, rt: RT) -> Response:
    """Declare an upload (kind, SHA-256, size; a checkpoint's job, index, step and proof). The
    same declaration by the same key answers its open session: resume at `received`."""
    return execute_signed(
        rt, signed, lambda s: service.process_create(s, rt, signed.public_key, body)
    )


@router.get("/{upload_id}", response_model=UploadView, responses=READ_PROBLEMS)
def get_upload(upload_id: UploadIdPath, rt: RT) -> UploadView:
    """Where an upload stands: `received` is the offset the next part must start at."""
    with rt.db.read() as session:
        return service.get_upload_view(repository.get_session(session, upload_id))


@router.put(
    "/{upload_id}",
    response_model=UploadView,
    responses=WRITE_PROBLEMS,
    openapi_extra={"requestBody": {"required": True, "content": BINARY}},
)
async def put_upload_part(
    upload_id: UploadIdPath,
    request: Request,
    rt: RT,
    offset: Annotated[int, Query(ge=0, le=MAX_DECLARED_SIZE)],
) -> Response:
    """Append the body at `offset` (exactly the bytes received so far). Signed like every write:
    over UNSIGNED_PAYLOAD (checked before a byte is read; the bytes are bound by the session's
    declared SHA-256 at the commit) or over the body's digest (checked once it streamed to disk:
    an unsigned or altered part is cut off again and never counted)."""
    check_signed_headers(request)
    row = await run_in_threadpool(_get_session, rt, upload_id)
    service.check_append(row, request.headers[HEADER_KEY], offset)
    check_declared_length(request, row.size - offset)
    with open_staged(get_session_path(rt.settings.get_upload_dir(), upload_id)) as handle:
        row = await run_in_threadpool(_get_session, rt, upload_id)  # again, under the lock
        service.check_append(row, request.headers[HEADER_KEY], offset)
        handle.truncate(offset)  # whatever an interrupted part left past the committed count
        handle.seek(offset)
        running = rt.upload_digests.begin(upload_id, row.kind, row.size, offset)
        try:
            response = await _append(request, rt, upload_id, offset, handle, row, running)
        except VeritrainError:
            handle.truncate(offset)
            raise
        rt.upload_digests.keep(upload_id, running)  # counted: its bytes are the session's now
        return response


async def _append(request: Request, rt: Runtime, upload_id: str, offset: int, handle, row, running):
    upfront = get_unsigned_payload_request(request)
    body_sha256, count = await receive_body(
        request, handle, row.size - offset, rt.receiving, running, hashed=upfront is None
    )
    signed = upfront or get_streamed_signed_request(request, body_sha256)
    await run_in_threadpool(os.fsync, handle.fileno())  # durable before it is counted
    return await run_in_threadpool(
        execute_signed,
        rt,
        signed,
        lambda s: service.process_append(s, rt, signed.public_key, upload_id, offset, count),
    )


def _get_session(rt: Runtime, upload_id: str):
    with rt.db.read() as session:
        row = repository.get_session(session, upload_id)
        session.expunge(row)
        return row


@router.post("/{upload_id}/commit", responses=WRITE_PROBLEMS)
def post_commit(upload_id: UploadIdPath, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """Check the complete upload (SHA-256, then the kind's own rules), store it and record it:
    a dataset answers {sha256, size}, a checkpoint its CheckpointView."""
    return service.commit_session(rt, signed, upload_id, process_checkpoint_upload)
