from typing import Any

from pydantic import BaseModel, Field

from coordinator.schemas import Request


class DisputeView(BaseModel):
    id: int
    job_id: str
    assignment_id: int
    status: str
    winner: str | None = None
    phase: str
    turn: str | None = None
    deadline: int
    round: int
    segment: int
    dispute_step: int | None = None  # the pinned step s (s -> s + 1), once pinned
    dispute_chunk: int | None = None  # the pinned state chunk of step s + 1, once pinned
    reason: str | None = None
    state: dict[str, Any]  # protocol.dispute.Game.to_json() under "game", and bookkeeping


class DisputePage(BaseModel):
    disputes: list[DisputeView]


class MoveRequest(Request):
    move: dict[str, Any] = Field(description="protocol.dispute.Move.to_json(), signed by its party")
