"""The wire format every party shares: request signing, commit formats, state names, problem
codes and the tree head. Pure (hashlib and enums): the coordinator and the SDK both import it, so
neither has to import the other to agree on a byte.

Signed request (the server checks exactly this):
    message = "VTREQ1\\n" METHOD "\\n" TARGET "\\n" hex(SHA-256(body)) "\\n" TIMESTAMP "\\n"
              NONCE "\\n" IDEMPOTENCY-KEY
signed with `protocol.signing.sign(key, DOMAIN_REQUEST, message)`; TARGET is the raw path plus
"?query" when there is one; TIMESTAMP is integer Unix seconds; NONCE is 16-64 characters of
[A-Za-z0-9_-]; headers below. An upload part (PUT /v1/uploads/{id}) may be signed with
UNSIGNED_PAYLOAD in place of its body's digest: its signature is then checked before a byte of
it is read, and its bytes are bound by the session's declared SHA-256, checked at the commit.
"""

import hashlib
from dataclasses import dataclass
from enum import StrEnum

REQUEST_TAG = b"VTREQ1"
VERIFICATION_COMMIT_TAG = b"VTVCOMMIT1"

HEADER_KEY = "X-Veritrain-Key"
HEADER_TIMESTAMP = "X-Veritrain-Timestamp"
HEADER_NONCE = "X-Veritrain-Nonce"
HEADER_SIGNATURE = "X-Veritrain-Signature"
HEADER_IDEMPOTENCY = "Idempotency-Key"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"  # an upload part's body digest, checked at commit instead


def compute_request_message(
    method: str, target: str, body: bytes, timestamp: int, nonce: str, idempotency_key: str = ""
) -> bytes:
    body_sha256 = hashlib.sha256(body).hexdigest()
    return compute_request_message_for_digest(
        method, target, body_sha256, timestamp, nonce, idempotency_key
    )


def compute_request_message_for_digest(
    method: str,
    target: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
    idempotency_key: str = "",
) -> bytes:
    """The same message from the body's hex SHA-256: what a streamed body is checked against
    once it has been hashed on its way to disk."""
    return b"\n".join(
        [
            REQUEST_TAG,
            method.upper().encode(),
            target.encode(),
            body_sha256.encode(),
            str(timestamp).encode(),
            nonce.encode(),
            idempotency_key.encode(),
        ]
    )


def compute_verification_commit(root: bytes, salt: bytes) -> bytes:
    """What a verifier commits before the solver's leaf is revealed: H(tag ‖ root ‖ salt)."""
    return hashlib.sha256(VERIFICATION_COMMIT_TAG + root + salt).digest()


@dataclass(frozen=True)
class TreeHead:
    """A signed head of the public log (RFC 9162 §4.10 in spirit: size, time, root)."""

    size: int
    timestamp_ms: int
    root: bytes
    signature: bytes
    public_key: bytes


class JobState(StrEnum):
    BIDDING = "bidding"
    AWARDED = "awarded"
    VERIFYING = "verifying"
    SETTLED = "settled"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_JOB_STATES = frozenset({JobState.SETTLED, JobState.FAILED, JobState.CANCELLED})


class BidStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class AssignmentState(StrEnum):
    """Per assignment (a verifier replays segment i → i+1), whose move it is."""

    AWAITING_START = "awaiting_start"  # solver must upload checkpoint i
    ASSIGNED = "assigned"  # verifier must commit H(root ‖ salt)
    COMMITTED = "committed"  # solver must upload checkpoint i+1
    REVEALABLE = "revealable"  # verifier must reveal (root, salt)
    DISPUTED = "disputed"  # a game is under way
    AGREED = "agreed"
    UPHELD = "upheld"  # the verifier's challenge won
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"  # the verifier's challenge lost
    CANCELLED = "cancelled"


ACTIVE_ASSIGNMENT_STATES = frozenset(
    {
        AssignmentState.AWAITING_START,
        AssignmentState.ASSIGNED,
        AssignmentState.COMMITTED,
        AssignmentState.REVEALABLE,
        AssignmentState.DISPUTED,
    }
)

SOLVER_OWES = frozenset({AssignmentState.AWAITING_START, AssignmentState.COMMITTED})
VERIFIER_OWES = frozenset({AssignmentState.ASSIGNED, AssignmentState.REVEALABLE})


class DisputeStatus(StrEnum):
    OPEN = "open"
    RULED = "ruled"


class ProblemCode(StrEnum):
    """`code` of an RFC 9457 problem response: what a client may branch on (never the text)."""

    INVALID_INPUT = "invalid_input"
    INVALID_SPEC = "invalid_spec"
    CHECKPOINT_CORRUPT = "checkpoint_corrupt"
    UNSTEPPABLE_STATE = "unsteppable_state"
    UNAUTHENTICATED = "unauthenticated"
    NONCE_REUSED = "nonce_reused"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"  # 416: a download's Range header
    BLOB_CORRUPT = "blob_corrupt"  # 409: stored bytes fail their SHA-256; refused, not served
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID_STATE = "invalid_state"
    ALREADY_EXISTS = "already_exists"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    QUOTA_EXCEEDED = "quota_exceeded"
    RATE_LIMITED = "rate_limited"
    WRITE_CONFLICT = "write_conflict"
    BUSY = "busy"
    PROFILE_MISMATCH = "profile_mismatch"
    PARTY_FAULT = "party_fault"
    ILLEGAL_MOVE = "illegal_move"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    HTTP_ERROR = "http_error"
    INTERNAL_ERROR = "internal_error"
