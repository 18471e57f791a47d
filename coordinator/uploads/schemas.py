from typing import Literal

from pydantic import BaseModel, Field

from coordinator.schemas import HexKey, Integer, Request

MAX_DECLARED_SIZE = 2**62  # BIGINT room; the coordinator's own limit is a setting


class CreateUploadRequest(Request):
    """What is about to be uploaded: its kind, SHA-256 and size, and for a checkpoint where it
    goes (the same query a single PUT /v1/jobs/{job_id}/checkpoints/{index} would carry)."""

    kind: Literal["checkpoint", "dataset", "state"]
    sha256: HexKey
    size: Integer = Field(ge=0, le=MAX_DECLARED_SIZE)
    job_id: HexKey | None = None
    index: Integer | None = Field(default=None, ge=0, le=10_000_000)
    step: Integer | None = Field(default=None, ge=0, le=10_000_000)
    proof: list[HexKey] = Field(default_factory=list, max_length=64)
    dispute_id: Integer | None = Field(default=None, ge=1, le=2**62)  # a dispute's agreed state


class UploadView(BaseModel):
    id: str
    kind: str
    sha256: str
    size: int
    received: int  # bytes committed so far: the next PUT's offset
    owner: str
    job_id: str | None = None
    index: int | None = None
    step: int | None = None
    dispute_id: int | None = None
