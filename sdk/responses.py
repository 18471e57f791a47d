"""What the coordinator answers, as frozen dataclasses: one per response schema of the server
(coordinator/*/schemas.py), with the same field names and types, except that states are the
protocol.wire enums. Callers branch on those enums, and on `CoordinatorError.problem_code`,
never on strings or message text.

Bodies are validated on the way in (pydantic over these dataclasses: unknown fields are
ignored, a missing or ill-typed one raises `InvalidResponse`), because nothing from a peer is
trusted. This module imports no server code.
"""

import functools
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from protocol.errors import VeritrainError
from protocol.wire import AssignmentState, BidStatus, DisputeStatus, JobState, ProblemCode, TreeHead

T = TypeVar("T")


class CoordinatorError(VeritrainError):
    """The coordinator answered with a problem response (RFC 9457). `problem_code` is a
    `ProblemCode` when the code is one the wire format names, else the raw string."""

    code = "coordinator_error"

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.problem_code = get_problem_code(problem.get("code"))
        super().__init__(f"HTTP {status} {self.problem_code}: {problem.get('detail', '')}")


class InvalidResponse(CoordinatorError):
    """The coordinator's answer is not what the API promises (a malformed body, bytes that do
    not match their hash): treated like a bad gateway."""

    code = "invalid_response"

    def __init__(self, detail: str):
        super().__init__(502, {"code": self.code, "detail": detail})


def get_problem_code(raw: object) -> ProblemCode | str:
    if not isinstance(raw, str):
        return "unknown"
    try:
        return ProblemCode(raw)
    except ValueError:
        return raw  # a code this client does not know yet: still comparable as a string


@functools.cache
def _adapter(cls: Any) -> TypeAdapter:
    return TypeAdapter(cls)  # built on first use: most commands need only a few


def parse_response(cls: type[T], data: Any) -> T:
    """Decoded JSON `data` as `cls`; a body that does not fit raises InvalidResponse."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        raise InvalidResponse(f"response is not a {getattr(cls, '__name__', cls)}: {err}") from err


def parse_page(cls: type[T], data: Any, key: str) -> list[T]:
    """The list under `key` of a page response (`{"jobs": [...]}`), each item as `cls`."""
    return parse_response(list[cls], data.get(key) if isinstance(data, dict) else None)


def _from_hex(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # pydantic reports the wrong type
    try:
        return bytes.fromhex(value)
    except ValueError as err:
        raise ValueError("must be hex") from err


HexBytes = Annotated[bytes, BeforeValidator(_from_hex)]

# --- service ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfoView:
    public_key: str
    dev: bool
    max_json_body: int
    max_checkpoint_body: int
    request_max_skew_s: int
    now: float


@dataclass(frozen=True)
class SweepView:
    resolved: int


@dataclass(frozen=True)
class ClockView:
    offset_s: float
    now: float


# --- accounts and ledger ------------------------------------------------------------------------


@dataclass(frozen=True)
class MovementView:
    log_index: int
    available: int


@dataclass(frozen=True)
class AccountView:
    public_key: str
    available: int
    escrow_and_stakes: dict[str, int]  # "kind:owner:job" -> balance


@dataclass(frozen=True)
class LedgerAccountView:
    id: int
    account: str  # "kind:owner:job", the key used in log postings
    balance: int


# --- public log ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntryView:
    index: int
    body: str  # canonical JSON, exactly the signed bytes
    leaf_hash: str
    signature: str


@dataclass(frozen=True)
class TreeHeadJson:
    """GET /v1/log/head as served (hex); `to_tree_head` gives protocol.wire's TreeHead."""

    size: int
    timestamp_ms: int
    root: HexBytes
    signature: HexBytes
    public_key: HexBytes

    def to_tree_head(self) -> TreeHead:
        return TreeHead(self.size, self.timestamp_ms, self.root, self.signature, self.public_key)


@dataclass(frozen=True)
class ProofJson:
    proof: tuple[HexBytes, ...]


# --- market -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BidView:
    bidder: str
    price: int
    stake: int
    profile: str
    status: BidStatus


@dataclass(frozen=True)
class JobView:
    id: int  # position in submission order: the cursor for list_jobs(after=)
    job_id: str
    submitter: str
    state: JobState
    profile: str
    bounty: int
    min_stake: int
    verifier_fee: int
    num_verifiers: int
    num_segments: int
    num_checkpoints: int
    created_at: float
    deadline: float
    solver: str | None = None
    verifier_bond: int = 0  # standing stake a verifier needs for this job
    price: int | None = None
    stake: int | None = None
    trajectory_root: str | None = None
    final_model_root: str | None = None
    outcome: str | None = None
    spec: dict[str, Any] | None = None  # only from get_job
    bids: tuple[BidView, ...] | None = None  # only from get_job


@dataclass(frozen=True)
class JobEventView:
    """What a write on a job answers: the job's state after it, and its log entry."""

    job_id: str
    state: JobState
    log_index: int


@dataclass(frozen=True)
class CheckpointView:
    job_id: str
    index: int
    step: int
    state_root: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DatasetView:
    sha256: str
    size: int


@dataclass(frozen=True)
class UploadView:
    """A resumable upload session: `received` is the offset the next part starts at."""

    id: str
    kind: str
    sha256: str
    size: int
    received: int
    owner: str
    job_id: str | None = None
    index: int | None = None
    step: int | None = None
    dispute_id: int | None = None  # a dispute's agreed state


# --- verification and disputes ------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierView:
    public_key: str
    profiles: tuple[str, ...]
    stake: int
    log_index: int | None = None
    max_state_bytes: int | None = None  # the largest state it declared it takes


@dataclass(frozen=True)
class AssignmentView:
    id: int
    job_id: str
    verifier: str
    segment: int
    state: AssignmentState
    deadline: float
    claimed_root: str | None = None
    volunteer: bool = False


@dataclass(frozen=True)
class DisputeView:
    id: int
    job_id: str
    assignment_id: int
    status: DisputeStatus
    phase: str
    deadline: int
    round: int
    segment: int
    state: dict[str, Any]  # protocol.dispute.Game.to_json() under "game", and bookkeeping
    winner: str | None = None
    turn: str | None = None
    dispute_step: int | None = None  # the pinned step s (s -> s + 1), once pinned
    dispute_chunk: int | None = None  # the pinned state chunk of step s + 1, once pinned
    reason: str | None = None

    @property
    def game_json(self) -> dict[str, Any]:
        """The game itself (protocol.dispute.Game.from_json reads it)."""
        return self.state["game"]
