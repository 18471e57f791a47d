"""One exception hierarchy that says who is at fault.

The difference decides who is slashed: a `PartyFault` is a counterparty's misbehaviour, an
`InvalidInput` is a caller's bad request (never a slash), `ProfileMismatch` is a scheduling error
(never a slash) and `InternalError` is our own bug.
"""


class VeritrainError(Exception):
    """Root of every error veritrain raises on purpose."""

    code = "veritrain_error"


class InternalError(VeritrainError):
    """An invariant of our own code broke: a bug, never anybody's fault but ours."""

    code = "internal_error"


class InvalidInput(VeritrainError):
    """A caller sent something malformed; `field` names the offending part when known."""

    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class InvalidSpec(InvalidInput):
    """A job spec (or a part of it) is malformed or names something unknown."""

    code = "invalid_spec"


class ProfileMismatch(VeritrainError):
    """This machine cannot honour an execution profile: a scheduling error, never a slash."""

    code = "profile_mismatch"


class CheckpointCorrupt(InvalidInput):
    """A checkpoint does not match its committed root; names the first bad chunk when it can."""

    code = "checkpoint_corrupt"

    def __init__(self, message: str, chunk_index: int | None = None, tensor: str | None = None):
        self.chunk_index = chunk_index
        self.tensor = tensor
        super().__init__(message, field="checkpoint")


class PartyFault(VeritrainError):
    """A counterparty broke the protocol; `party` names the role at fault."""

    code = "party_fault"

    def __init__(self, party: str, message: str):
        self.party = party
        super().__init__(f"{party} at fault: {message}")


class UnsteppableState(CheckpointCorrupt):
    """A state the training program cannot step (tensors missing, made up, or of the wrong
    dtype or shape): the fault of whoever supplied it — in a dispute, the solver, who owes every
    state and bound itself to its root."""

    code = "unsteppable_state"
