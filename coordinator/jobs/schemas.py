import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from coordinator.schemas import NO_NUL, Amount, HexKey, Integer, PositiveAmount, Request


class SubmitJobRequest(Request):
    spec: dict[str, Any]
    bounty: PositiveAmount  # the minimum is a setting (min_bounty), never below 1
    # Omitted: the coordinator derives them (protocol.assurance: the default fee, and the
    # least stake of the stake rule); given: they must meet those rules, else 422.
    min_stake: Amount | None = None
    verifier_fee: Amount | None = None
    num_verifiers: Integer = Field(default=1, ge=0, le=8)
    num_segments: Integer = Field(default=1, ge=1, le=64)
    bidding_s: float = Field(default=60.0, strict=True, ge=0, le=30 * 86400, allow_inf_nan=False)
    # Either sets num_segments and num_verifiers from protocol.assurance (overriding them): a
    # built-in level, or the detection probability wanted for a one-step deviation.
    assurance: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[a-z]+$")
    detection: float | None = Field(default=None, gt=0, le=1, strict=True, allow_inf_nan=False)


class BidRequest(Request):
    price: Amount
    stake: Amount
    profile: str = Field(min_length=1, max_length=128, pattern=NO_NUL)


MAX_REPORTED_LOSSES = 10_000  # entries in a reported loss curve (the solver thins to 1,000)
StepKey = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,11})$", max_length=12)]
FiniteLoss = Annotated[float, Field(strict=True, allow_inf_nan=False)]
LossCurve = Annotated[dict[StepKey, FiniteLoss], Field(max_length=MAX_REPORTED_LOSSES)]


class CommitmentRequest(Request):
    commitment: dict[str, Any]
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    # checkpoint 0's state root and its inclusion proof at leaf 0 of the committed trajectory
    initial_state_root: str = Field(pattern=r"^[0-9a-f]{64}$")
    initial_proof: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(max_length=64)
    # The training loss per step as the solver reports it: shown on the dashboard, labelled
    # "reported by the solver, not verified". Not in the signed commitment bytes and never
    # checked; bounded (entries, key length, finite floats) so a solver cannot store much.
    losses: LossCurve | None = None

    def reported_losses_json(self) -> str | None:
        """Canonical JSON of `losses` (sorted keys, no spaces), or None when none was sent."""
        if self.losses is None:
            return None
        return json.dumps(self.losses, sort_keys=True, separators=(",", ":"), allow_nan=False)


class BidView(BaseModel):
    bidder: str
    price: int
    stake: int
    profile: str
    status: str


class JobView(BaseModel):
    id: int  # position in submission order: the keyset cursor for GET /v1/jobs?after=
    job_id: str
    submitter: str
    state: str
    profile: str
    bounty: int
    min_stake: int
    verifier_fee: int
    verifier_bond: int = 0  # standing stake a verifier needs for this job
    num_verifiers: int
    num_segments: int
    num_checkpoints: int
    created_at: float
    deadline: float
    solver: str | None = None
    price: int | None = None
    stake: int | None = None
    trajectory_root: str | None = None
    final_model_root: str | None = None
    outcome: str | None = None
    spec: dict[str, Any] | None = None
    bids: list[BidView] | None = None


class JobPage(BaseModel):
    jobs: list[JobView]


class JobEventView(BaseModel):
    job_id: str
    state: str
    log_index: int


class CheckpointView(BaseModel):
    job_id: str
    index: int
    step: int
    state_root: str
    sha256: str
    size: int


JobId = HexKey
