"""The referee's computation, run where it can be trusted: `protocol.referee.compute_referee_chunk`
in a warm worker subprocess pinned to the job's execution profile (sdk.warm_worker, started when
the dispute opens, so a ruling does not wait for a torch import). The worker checks the state
against its agreed root before stepping, so a wrong blob can never make the referee rule on the
wrong state. Runs outside any transaction."""

from pathlib import Path

from protocol.spec import parse_job_spec
from sdk.warm_worker import WorkerPool, staged_worker_files


def run_referee_chunk_hash(
    workers: WorkerPool,
    spec_json: dict,
    dataset: bytes | None,
    state_path: Path,
    agreed_root: str,
    chunk: int,
    timeout_s: float,
) -> bytes:
    """Hash of chunk `chunk` one step after the agreed state in the file `state_path` (the worker
    reads it a tensor at a time); the worker's typed errors (`CheckpointCorrupt` for a state that
    is not the agreed one) pass through."""
    with staged_worker_files(dataset=dataset) as paths:
        result = workers.run(
            {
                "command": "step",
                "spec": spec_json,
                "state_path": str(state_path),
                "agreed_root": agreed_root,
                "chunk": chunk,
                "dataset_path": paths["dataset"],
            },
            parse_job_spec(spec_json).profile,
            timeout_s,
        )
    return bytes.fromhex(result["chunk_hash"])
