"""The blob store's typed errors, under coordinator.errors (so coordinator.problems maps them)."""

from coordinator.errors import InvalidState, NotFound
from protocol.errors import InvalidInput


class BlobCorrupt(InvalidState):
    """Stored bytes no longer hash to their address: refused, never served (409, not a 5xx: the
    request was fine, the object is unusable until an operator restores it or it is uploaded
    again)."""

    code = "blob_corrupt"


class BlobMissing(NotFound):
    """The ledger names a blob the store does not hold (code not_found)."""


class BlobMismatch(InvalidInput):
    """An uploader's bytes do not hash to what it declared (code invalid_input, 422)."""

    def __init__(self, message: str, field: str = "sha256"):
        super().__init__(message, field)
