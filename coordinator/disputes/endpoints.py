from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from coordinator.auth import Signed, execute_signed, get_runtime
from coordinator.disputes import repository, service
from coordinator.disputes.schemas import DisputeView
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import EmptyRequest

router = APIRouter(prefix="/v1/disputes", tags=["disputes"])
RT = Annotated[Runtime, Depends(get_runtime)]
DisputeId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/{dispute_id}", response_model=DisputeView, responses=READ_PROBLEMS)
def get_dispute(dispute_id: DisputeId, rt: RT) -> DisputeView:
    with rt.db.read() as session:
        return service.get_dispute_view(repository.get_dispute(session, dispute_id))


@router.post("/{dispute_id}/rule", response_model=DisputeView, responses=WRITE_PROBLEMS)
async def post_rule(dispute_id: DisputeId, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """Ask the referee to rule now (the sweeper rules on open disputes too)."""
    await run_in_threadpool(execute_signed, rt, signed, lambda s: {})  # nonce + signature first
    view = await run_in_threadpool(service.process_rule_dispute, rt, dispute_id)
    return Response(view.model_dump_json(), media_type="application/json")
