"""The referee's one step: from the agreed state at s (checked against its root), recompute
s + 1 with the protocol's own training program and return the disputed chunk's leaf hash, which
`protocol.dispute.process_ruling` compares with both claims. One step of compute, whatever the
job's size.

This is the ruling's only definition: the coordinator runs it in a worker pinned to the job's
execution profile (`sdk.tasks`, task `step`), tests call it directly.
"""

from protocol.errors import CheckpointCorrupt, UnsteppableState
from protocol.state import (
    TrainingState,
    compute_chunk_hashes,
    compute_state_root,
    decode_state,
    encode_state,
    get_step,
    validate_state_matches_layout,
)
from protocol.training import TrainingProgram


def compute_referee_chunk(
    program: TrainingProgram, agreed_state: bytes, agreed_root: bytes, chunk: int
) -> bytes:
    """Leaf hash of chunk `chunk` of the state one step after `agreed_state` (safetensors bytes,
    refused unless canonical: same tensors under an altered header are not the agreed bytes)."""
    state = decode_state(agreed_state)  # safetensors only: never unpickles
    if encode_state(state) != agreed_state:
        raise CheckpointCorrupt(
            "the supplied state's safetensors header differs from the canonical encoding"
        )
    return compute_referee_chunk_of_state(program, state, agreed_root, chunk)


def compute_referee_chunk_of_state(
    program: TrainingProgram, state: TrainingState, agreed_root: bytes, chunk: int
) -> bytes:
    """The same from a decoded state (`sdk.state_files.read_state_file` checks the encoding).

    The root commits to every tensor, the step counter included, and the game bound it to step s:
    a state that hashes to it is the agreed state at s, whatever else the caller believes."""
    if compute_state_root(state) != agreed_root:
        raise CheckpointCorrupt("the supplied state does not match the agreed root")
    hashes = compute_chunk_hashes(compute_stepped_state(program, state))
    if not 0 <= chunk < len(hashes):
        raise CheckpointCorrupt(f"the state at step {get_step(state) + 1} has no chunk {chunk}")
    return hashes[chunk]


def compute_stepped_state(program: TrainingProgram, state):
    """`program.step(state)`, or `UnsteppableState` naming the tensor when the state is not one
    of this program's (its tensors, dtypes and shapes are those of `initial_state()`, which holds
    every optimizer slot from step 0): a made-up state is its supplier's fault, never a
    KeyError of ours."""
    try:
        validate_state_matches_layout(state, program.state_layout())
    except CheckpointCorrupt as err:
        raise UnsteppableState(
            f"the referee cannot step this state: {err.message}", tensor=err.tensor
        ) from err
    return program.step(state)
