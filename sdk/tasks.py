"""What the training worker does, once its profile is pinned: train, replay, the referee's step,
or a dispute's trace.

Runs only inside `sdk.worker`'s child process (torch was imported under the profile's settings).
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.behaviours import load_behaviour
from protocol.errors import InvalidInput
from protocol.job_files import check_job_file
from protocol.referee import compute_referee_chunk_of_state
from protocol.spec import parse_job_spec
from protocol.state import compute_state_root, get_step
from protocol.training import TrainingProgram, check_runnable_spec
from sdk.state_files import read_state_file, write_atomically
from sdk.store import CheckpointStore, read_job_files

Progress = Callable[[dict[str, Any]], None]
LOSSES_FILE = "losses.json"  # training loss per step, for reports (not part of any commitment)
PROGRESS_INTERVAL_S = 0.1


def read_request_files(request: dict[str, Any]) -> dict[str, bytes]:
    """The job files a request names by local path (`file_paths`), keyed by SHA-256."""
    return read_job_files(request.get("file_paths") or [])


def _throttled(progress: Progress) -> Callable[..., None]:
    last = [0.0]

    def report(force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if force or now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            progress(fields)

    return report


def train(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Train (or resume) a job into a run directory, committing every checkpoint."""
    spec = parse_job_spec(request["spec"])
    files = read_request_files(request)
    program = check_runnable_spec(spec, files)
    store = CheckpointStore.open_or_create(Path(request["dir"]), spec, files)
    state = _resume_point(store, program)
    report = _throttled(progress)
    resumed_from = get_step(state)
    losses_path = store.directory / LOSSES_FILE
    losses = (
        {int(k): v for k, v in json.loads(losses_path.read_text()).items()}
        if losses_path.exists()
        else {}
    )
    behaviour = load_behaviour(request["behaviour"], "solver") if request.get("behaviour") else None
    while get_step(state) < spec.steps:
        before = state
        state, metrics = program.step_with_metrics(state)
        step = get_step(state)
        if behaviour is not None:  # red-team runs: the same hook the solver's dispute trace uses
            state = behaviour.transform_step(program, before, state, step)
        losses[step] = metrics["loss"]
        if step in store.checkpoint_steps:
            store.write_checkpoint(state)
            write_atomically(store.directory / LOSSES_FILE, json.dumps(losses).encode())
        report(force=step == spec.steps, step=step, steps=spec.steps, loss=metrics["loss"])
    return {**store.summary(), "resumed_from_step": resumed_from}


def _resume_point(store: CheckpointStore, program: TrainingProgram):
    entries = store.entries()
    if not entries:
        state = program.initial_state()
        store.write_checkpoint(state)
        return state
    return store.load_checkpoint(entries[-1].index)


def replay(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Replay checkpoint i → i+1 and compare with the committed root (optionally every step's root)."""
    store = CheckpointStore.open(Path(request["dir"]))
    segment = request["segment"]
    entries = store.entries()
    if not isinstance(segment, int) or not 0 <= segment < len(entries) - 1:
        raise InvalidInput(f"must be between 0 and {len(entries) - 2}", "segment")
    program = check_runnable_spec(store.spec, store.job_files())
    state = store.load_checkpoint(segment)
    target = entries[segment + 1]
    step_roots = []
    report = _throttled(progress)
    while get_step(state) < target.step:
        state = program.step(state)
        if request.get("step_roots"):
            step_roots.append(compute_state_root(state).hex())
        report(step=get_step(state), steps=target.step)
    computed = compute_state_root(state)
    result = {
        "segment": segment,
        "match": computed == target.state_root,
        "expected": target.state_root.hex(),
        "computed": computed.hex(),
        "from_step": entries[segment].step,
        "to_step": target.step,
    }
    if request.get("step_roots"):
        result["step_roots"] = step_roots
    return result


def run_referee_step(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The referee's one step (`protocol.referee`) on the agreed state read from disk: checked
    against `agreed_root`, stepped once, the hash of chunk `chunk` of the result."""
    chunk = request.get("chunk")
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise InvalidInput("must be the disputed chunk's index", "chunk")
    spec = parse_job_spec(request["spec"])
    program = check_runnable_spec(spec, read_request_files(request))
    agreed_state = read_state_file(Path(request["state_path"]))  # a tensor at a time
    chunk_hash = compute_referee_chunk_of_state(
        program, agreed_state, bytes.fromhex(request["agreed_root"]), chunk
    )
    return {"chunk_hash": chunk_hash.hex()}


def compute_program_layout(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The submission validator on a job too large for a coordinator to build: its state's
    layout (InvalidSpec, naming the field, when it cannot be built)."""
    spec = parse_job_spec(request["spec"])
    program = check_runnable_spec(spec, read_request_files(request))
    return {
        "layout": {
            name: [tag, list(shape)] for name, (tag, shape) in program.state_layout().items()
        }
    }


def check_file(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """An uploaded job file is a dataset, weights or an ONNX graph (InvalidSpec otherwise)."""
    return {"kind": check_job_file(Path(request["file_path"]).read_bytes())}


def compute_initial_root(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The root of checkpoint 0 of `spec`: for states too large to build in a coordinator."""
    spec = parse_job_spec(request["spec"])
    program = check_runnable_spec(spec, read_request_files(request))
    return {"root": compute_state_root(program.initial_state()).hex()}


def _trace(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from sdk.trace import trace_segment  # dispute play only

    return trace_segment(request, progress)


TASKS = {
    "train": train,
    "replay": replay,
    "step": run_referee_step,
    "trace": _trace,
    "initial_root": compute_initial_root,
    "layout": compute_program_layout,
    "check_file": check_file,
}


def run_task(request: dict[str, Any], progress: Progress) -> dict[str, Any]:
    if not isinstance(request, dict) or request.get("command") not in TASKS:
        raise InvalidInput(f"unknown worker command (known: {', '.join(TASKS)})", "command")
    return TASKS[request["command"]](request, progress)
