from typing import Any

from pydantic import BaseModel


class DisputeView(BaseModel):
    id: int
    job_id: str
    assignment_id: int
    status: str
    winner: str | None = None
    state: dict[str, Any]
