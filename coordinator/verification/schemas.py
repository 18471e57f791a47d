from typing import Annotated

from pydantic import BaseModel, Field

from coordinator.schemas import NO_NUL, Amount, PositiveAmount, Request

ProfileLabel = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class RegisterVerifierRequest(Request):
    profiles: list[ProfileLabel] = Field(min_length=1, max_length=16)
    stake: Amount
    # the largest training state (bytes) it can replay; the draw passes it over for larger jobs
    max_state_bytes: int | None = Field(default=None, ge=1, le=2**62)


class VerifierView(BaseModel):
    public_key: str
    profiles: list[str]
    stake: int
    log_index: int | None = None
    max_state_bytes: int | None = None  # the largest state it declared it takes


class WithdrawStakeRequest(Request):
    amount: PositiveAmount


class CommitVerificationRequest(Request):
    commit_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class RevealVerificationRequest(Request):
    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    salt: str = Field(pattern=r"^(?:[0-9a-f]{2}){1,64}$")  # whole bytes: bytes.fromhex needs it


class AssignmentView(BaseModel):
    id: int
    job_id: str
    verifier: str
    segment: int
    state: str
    deadline: float
    claimed_root: str | None = None
    volunteer: bool = False


class ChallengeRequest(Request):
    segment: int = Field(ge=0, le=2**31 - 1)


class AssignmentPage(BaseModel):
    assignments: list[AssignmentView]
