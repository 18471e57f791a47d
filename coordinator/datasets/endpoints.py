"""Content-addressed dataset files for jobs whose dataset is a user's safetensors file."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from coordinator.auth import check_signed_headers, get_runtime, get_streamed_signed_request
from coordinator.blobstore.ranges import blob_response
from coordinator.datasets import service
from coordinator.models import BLOB_DATASET
from coordinator.problems import DOWNLOAD_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.uploads.service import commit_dataset
from coordinator.uploads.staging import check_declared_length, receive_body, temporary_staged

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
RT = Annotated[Runtime, Depends(get_runtime)]
Sha256Path = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
RangeHeader = Annotated[str | None, Header(alias="Range", max_length=200)]


@router.put(
    "/{sha256}",
    responses=WRITE_PROBLEMS,
    openapi_extra={"requestBody": {"required": True, "content": BINARY}},
)
async def put_dataset(sha256: Sha256Path, request: Request, rt: RT) -> Response:
    """Upload a safetensors dataset file under its SHA-256 in one request (idempotent); the
    body streams to disk. Large files: the resumable /v1/uploads."""
    check_signed_headers(request)
    limit = min(rt.settings.max_checkpoint_body, rt.settings.max_single_put_body)
    check_declared_length(request, limit)
    with temporary_staged(rt.settings.get_upload_dir()) as (path, handle):
        body_sha256, _ = await receive_body(request, handle, limit)
        signed = get_streamed_signed_request(request, body_sha256)
        return await run_in_threadpool(commit_dataset, rt, signed, path, sha256)


@router.get(
    "/{sha256}", responses={**DOWNLOAD_PROBLEMS, 200: {"content": BINARY}, 206: {"content": BINARY}}
)
def get_dataset(sha256: Sha256Path, rt: RT, range_header: RangeHeader = None) -> Response:
    """The file (or one byte range of it: Range: bytes=FIRST-LAST), checked against its SHA-256
    before a byte is sent."""
    with rt.db.read() as session:
        service.get_dataset_row(session, sha256)
    return blob_response(rt.blobs, BLOB_DATASET, sha256, range_header)
