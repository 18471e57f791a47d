"""The referee's computation: replay the disputed segment from the agreed starting checkpoint,
one step per worker call, in a subprocess pinned to the job's execution profile (sdk.worker).

The start state is checked against its committed root by the worker before it steps, so a
corrupt blob can never make the referee rule on the wrong state. Runs outside any transaction.
"""

import tempfile
from pathlib import Path

from protocol.spec import JobSpec
from sdk.worker import run_worker


def compute_segment_root(spec_json: dict, spec: JobSpec, dataset: bytes | None, start_bytes: bytes,
                         start_root: str, to_step: int, start_step: int, timeout_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="veritrain-referee-") as tmp:
        state_path = Path(tmp) / "state.safetensors"
        state_path.write_bytes(start_bytes)
        dataset_path = Path(tmp) / "dataset.safetensors" if dataset is not None else None
        if dataset_path:
            dataset_path.write_bytes(dataset)
        expected: str | None = start_root
        root = start_root
        for _ in range(start_step, to_step):
            result = run_worker({"command": "step", "spec": spec_json, "state_path": str(state_path),
                                 "expected_root": expected, "out_path": str(state_path),
                                 "dataset_path": str(dataset_path) if dataset_path else None},
                                spec.profile, timeout=timeout_s)
            root, expected = result["state_root"], None  # later states are our own output
        return root
