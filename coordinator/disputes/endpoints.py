from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from coordinator.auth import (
    Signed,
    execute_signed,
    get_runtime,
)
from coordinator.disputes import repository, service
from coordinator.disputes.schemas import DisputePage, DisputeView, MoveRequest
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import MAX_ROW_ID, NO_NUL, EmptyRequest
from coordinator.transitions import process_dispute_move, process_rule_dispute
from coordinator.uploads.service import commit_single_put, commit_state

router = APIRouter(prefix="/v1/disputes", tags=["disputes"])
RT = Annotated[Runtime, Depends(get_runtime)]
DisputeId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.get("", response_model=DisputePage, responses=READ_PROBLEMS)
def get_disputes(
    rt: RT,
    party: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
    status: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DisputePage:
    """Disputes where `party` is the solver or the verifier."""
    with rt.db.read() as session:
        rows = repository.get_party_disputes(session, party, status, limit)
        return DisputePage(disputes=[service.get_dispute_view(d) for d in rows])


@router.get("/{dispute_id}", response_model=DisputeView, responses=READ_PROBLEMS)
def get_dispute(dispute_id: DisputeId, rt: RT) -> DisputeView:
    with rt.db.read() as session:
        return service.get_dispute_view(repository.get_dispute(session, dispute_id))


@router.post("/{dispute_id}/moves", response_model=DisputeView, responses=WRITE_PROBLEMS)
def post_move(dispute_id: DisputeId, body: MoveRequest, signed: Signed, rt: RT) -> Response:
    """A bisection move (protocol.dispute.Move), signed by its party inside a request it signs."""
    return execute_signed(
        rt, signed, lambda s: process_dispute_move(s, rt, signed.public_key, dispute_id, body.move)
    )


@router.put(
    "/{dispute_id}/state",
    response_model=DisputeView,
    responses=WRITE_PROBLEMS,
    openapi_extra={"requestBody": {"required": True, "content": BINARY}},
)
async def put_state(dispute_id: DisputeId, request: Request, rt: RT) -> Response:
    """The agreed state at the pinned step (safetensors), which the solver owes the referee, in
    one request: streamed to disk and checked as it is read back. Large states: /v1/uploads."""
    return await commit_single_put(request, rt, commit_state, dispute_id)


@router.post("/{dispute_id}/rule", response_model=DisputeView, responses=WRITE_PROBLEMS)
async def post_rule(dispute_id: DisputeId, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """Ask the referee to rule now, once the game is in its ruling phase (the sweeper does too)."""
    await run_in_threadpool(execute_signed, rt, signed, lambda s: {})  # nonce + signature first
    view = await run_in_threadpool(process_rule_dispute, rt, dispute_id)
    return Response(view.model_dump_json(), media_type="application/json")
