"""Service-level endpoints: info, the deadline sweep trigger and the dev-only protocol clock."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordinator import sweeper
from coordinator.auth import Signed, execute_signed, get_runtime
from coordinator.log.repository import lock_log_state
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import EmptyRequest, Request
from protocol.signing import get_public_key

router = APIRouter(prefix="/v1", tags=["system"])
dev_router = APIRouter(prefix="/v1/dev", tags=["dev"])
RT = Annotated[Runtime, Depends(get_runtime)]


class InfoView(BaseModel):
    public_key: str
    dev: bool
    max_json_body: int
    max_checkpoint_body: int
    request_max_skew_s: int
    now: float


class SweepView(BaseModel):
    resolved: int


class ClockRequest(Request):
    advance_s: float = Field(strict=True, ge=0, le=10**8, allow_inf_nan=False)  # no `false`


class ClockView(BaseModel):
    offset_s: float
    now: float


@router.get("/info", response_model=InfoView, responses=READ_PROBLEMS)
def get_info(rt: RT) -> InfoView:
    s = rt.settings
    return InfoView(
        public_key=get_public_key(rt.key).hex(),
        dev=s.dev,
        max_json_body=s.max_json_body,
        max_checkpoint_body=s.max_checkpoint_body,
        request_max_skew_s=s.request_max_skew_s,
        now=rt.clock.now(),
    )


@router.post("/sweep", response_model=SweepView, responses=WRITE_PROBLEMS)
def post_sweep(_body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """Resolve every overdue deadline now (the background sweeper does the same periodically)."""
    response = execute_signed(rt, signed, lambda s: {"resolved": 0})
    resolved = sweeper.process_sweep(rt)
    return Response(
        content=SweepView(resolved=resolved).model_dump_json(),
        status_code=response.status_code,
        media_type="application/json",
    )


def _advance(session: Session, rt: Runtime, seconds: float) -> ClockView:
    state = lock_log_state(session)
    state.clock_offset += seconds
    rt.clock.offset_s = state.clock_offset
    return ClockView(offset_s=state.clock_offset, now=rt.clock.now())


@dev_router.post("/clock", response_model=ClockView, responses=WRITE_PROBLEMS)
def post_clock(body: ClockRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(rt, signed, lambda s: _advance(s, rt, body.advance_s))
