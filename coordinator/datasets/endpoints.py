"""Content-addressed dataset files for jobs whose dataset is a user's safetensors file."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response

from coordinator.auth import get_runtime
from coordinator.blobstore.ranges import blob_response
from coordinator.datasets import service
from coordinator.models import BLOB_DATASET
from coordinator.problems import DOWNLOAD_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.uploads.service import commit_dataset, commit_single_put

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
    return await commit_single_put(request, rt, commit_dataset, sha256)


@router.get(
    "/{sha256}", responses={**DOWNLOAD_PROBLEMS, 200: {"content": BINARY}, 206: {"content": BINARY}}
)
def get_dataset(sha256: Sha256Path, rt: RT, range_header: RangeHeader = None) -> Response:
    """The file (or one byte range of it: Range: bytes=FIRST-LAST), checked against its SHA-256
    before a byte is sent."""
    with rt.db.read() as session:
        service.get_dataset_row(session, sha256)
    return blob_response(rt.blobs, BLOB_DATASET, sha256, range_header)
