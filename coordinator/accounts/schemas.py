from pydantic import BaseModel

from coordinator.schemas import HexKey, PositiveAmount, Request


class FaucetRequest(Request):
    amount: PositiveAmount


class TransferRequest(Request):
    to: HexKey
    amount: PositiveAmount


class MovementResponse(BaseModel):
    log_index: int
    available: int


class AccountView(BaseModel):
    public_key: str
    available: int
    escrow_and_stakes: dict[str, int]
