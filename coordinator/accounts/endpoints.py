from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from coordinator.accounts import service
from coordinator.accounts.schemas import (
    AccountView,
    FaucetRequest,
    MovementResponse,
    TransferRequest,
)
from coordinator.auth import Signed, execute_signed, get_runtime
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["accounts"])
dev_router = APIRouter(prefix="/v1/dev", tags=["dev"])
RT = Annotated[Runtime, Depends(get_runtime)]


@router.post("/accounts/transfer", response_model=MovementResponse, responses=WRITE_PROBLEMS)
def post_transfer(body: TransferRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt,
        signed,
        lambda s: service.process_transfer(s, rt, signed.public_key, body.to, body.amount),
    )


@router.get("/accounts/transfer", include_in_schema=False)
def get_transfer() -> None:
    """`transfer` is no account key: a GET here is 405 (POST only), not a malformed key (422)."""
    raise HTTPException(405, headers={"Allow": "POST"})


@router.get("/accounts/{public_key}", response_model=AccountView, responses=READ_PROBLEMS)
def get_account(public_key: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")], rt: RT) -> AccountView:
    with rt.db.read() as session:
        return service.get_account_view(session, public_key)


@dev_router.post("/faucet", response_model=MovementResponse, responses=WRITE_PROBLEMS)
def post_faucet(body: FaucetRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: service.process_faucet(s, rt, signed.public_key, body.amount)
    )
