"""The referee's one step: from the agreed state at s (checked against its root), recompute
s + 1 with the protocol's own training program and return the disputed chunk's leaf hash, which
`protocol.dispute.process_ruling` compares with both claims. One step of compute, whatever the
job's size."""

from protocol.errors import CheckpointCorrupt
from protocol.state import compute_chunk_hashes, compute_state_root, decode_state, get_step
from protocol.training import TrainingProgram


def compute_referee_chunk(program: TrainingProgram, agreed_state: bytes, agreed_root: bytes,
                          step: int, chunk: int) -> bytes:
    state = decode_state(agreed_state)  # safetensors only: never unpickles
    if get_step(state) != step or compute_state_root(state) != agreed_root:
        raise CheckpointCorrupt(f"the supplied state is not the agreed state at step {step}")
    hashes = compute_chunk_hashes(program.step(state))
    if not 0 <= chunk < len(hashes):
        raise CheckpointCorrupt(f"the state at step {step + 1} has no chunk {chunk}")
    return hashes[chunk]
