"""The referee's computation, run where it can be trusted: `protocol.referee.compute_referee_chunk`
in a warm worker subprocess pinned to the job's execution profile (sdk.warm_worker, started when
the dispute opens, so a ruling does not wait for a torch import). The worker checks the state
against its agreed root before stepping, so a wrong blob can never make the referee rule on the
wrong state. Runs outside any transaction."""

from pathlib import Path

from coordinator.datasets.service import run_job_worker
from coordinator.runtime import Runtime


def run_referee_chunk_hash(
    rt: Runtime, spec_json: dict, state_path: Path, agreed_root: str, chunk: int
) -> bytes:
    """Hash of chunk `chunk` one step after the agreed state in the file `state_path` (the worker
    reads it, and the job's dataset, from files); the worker's typed errors (`CheckpointCorrupt`
    for a state that is not the agreed one) pass through."""
    result = run_job_worker(
        rt, spec_json, "step", state_path=str(state_path), agreed_root=agreed_root, chunk=chunk
    )
    return bytes.fromhex(result["chunk_hash"])
