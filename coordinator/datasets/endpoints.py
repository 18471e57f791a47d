from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from coordinator.auth import Signed, call_burning_nonce_on_error, execute_signed, get_runtime
from coordinator.datasets import service
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
RT = Annotated[Runtime, Depends(get_runtime)]
Sha256Path = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.put(
    "/{sha256}",
    responses=WRITE_PROBLEMS,
    openapi_extra={"requestBody": {"required": True, "content": BINARY}},
)
async def put_dataset(sha256: Sha256Path, request: Request, signed: Signed, rt: RT) -> Response:
    """Upload a safetensors dataset file under its SHA-256 (idempotent)."""
    data = await request.body()
    await run_in_threadpool(
        call_burning_nonce_on_error, rt, signed, service.check_dataset_file, sha256, data
    )
    return await run_in_threadpool(
        execute_signed,
        rt,
        signed,
        lambda s: service.process_upload(s, rt, signed.public_key, sha256, data),
    )


@router.get("/{sha256}", responses={**READ_PROBLEMS, 200: {"content": BINARY}})
def get_dataset(sha256: Sha256Path, rt: RT) -> Response:
    with rt.db.read() as session:
        data = service.get_dataset_bytes(session, sha256)
    return Response(content=data, media_type="application/octet-stream")
