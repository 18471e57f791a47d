"""The coordinator's own typed errors, under protocol.errors' hierarchy.

Routes never pick HTTP statuses: `coordinator.problems` maps these (and protocol.errors) to
RFC 9457 problem responses in one place.
"""

from protocol.errors import InvalidInput, VeritrainError


class Unauthenticated(InvalidInput):
    """Missing, malformed, stale or wrong request signature."""

    code = "unauthenticated"


class NonceReused(InvalidInput):
    """A signed request was replayed (its nonce was already seen)."""

    code = "nonce_reused"


class IdempotencyKeyReused(InvalidInput):
    """The same idempotency key arrived with a different request."""

    code = "idempotency_key_reused"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class RangeNotSatisfiable(InvalidInput):
    """A download's Range header is malformed or selects nothing of the blob's `size` bytes."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, size: int):
        self.size = size
        super().__init__(message, "Range")


class NotFound(VeritrainError):
    code = "not_found"


class Forbidden(VeritrainError):
    """Signed correctly, but this account may not do this (e.g. not the job's solver)."""

    code = "forbidden"


class InvalidState(VeritrainError):
    """The request is well-formed but the object is not in a state that allows it."""

    code = "invalid_state"


class AlreadyExists(InvalidState):
    """The object this request would create exists already (a second bid, the same job twice)."""

    code = "already_exists"


class InsufficientFunds(VeritrainError):
    code = "insufficient_funds"

    def __init__(self, account: str, balance: int, needed: int):
        self.account = account
        super().__init__(f"{account} holds {balance}, needs {needed}")


class QuotaExceeded(InvalidState):
    """This account holds as much as one key may (open jobs, stored bytes)."""

    code = "quota_exceeded"


class RateLimited(VeritrainError):
    """This key sent more signed requests than its rate allows; retry after `retry_after_s`."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ReceiverBusy(VeritrainError):
    """This replica is receiving as many request bodies as it may: the client may try again."""

    code = "busy"


class WriteConflict(VeritrainError):
    """Concurrent writers kept colliding after every retry: the client may try again."""

    code = "write_conflict"
