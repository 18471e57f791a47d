"""Segment traces for the bisection game: replay a segment once, keep every step's state, root and
chunk hashes, so each later move (a root at a dissection point, a subtree of the chunk tree, the
agreed state for the referee) is a lookup instead of a recomputation.

Runs inside `sdk.worker`'s child process, under the job's execution profile.
"""

import json
from pathlib import Path
from typing import Any

from protocol.behaviours import load_behaviour
from protocol.merkle import root_from_leaf_hashes
from protocol.spec import parse_job_spec
from protocol.state import compute_chunk_hashes, get_step
from protocol.training import build_program
from sdk.state_files import read_state_file, write_atomically, write_state_file
from sdk.store import read_job_files, verify_state

TRACE_FILE = "trace.json"


def get_state_path(trace_dir: Path, step: int) -> Path:
    return trace_dir / f"{step:09d}.safetensors"


def trace_segment(request: dict[str, Any], progress) -> dict[str, Any]:
    """request: spec, start_state_path, start_root (checked), to_step, trace_dir, optional
    file_paths (the job's files) and behaviour (a solver behaviour's name: its trace must repeat exactly what it
    trained, cheats included)."""
    spec = parse_job_spec(request["spec"])
    program = build_program(spec, read_job_files(request.get("file_paths") or []))
    state = read_state_file(Path(request["start_state_path"]))
    verify_state(state, bytes.fromhex(request["start_root"]), get_step(state), None)
    trace_dir = Path(request["trace_dir"])
    trace_dir.mkdir(parents=True, exist_ok=True)
    steps = {get_step(state): _record(trace_dir, state)}
    behaviour = load_behaviour(request["behaviour"], "solver") if request.get("behaviour") else None
    while get_step(state) < request["to_step"]:
        before = state
        state = program.step(state)
        if behaviour is not None:
            state = behaviour.transform_step(program, before, state, get_step(state))
        steps[get_step(state)] = _record(trace_dir, state)
        progress({"step": get_step(state), "steps": request["to_step"]})
    write_atomically(trace_dir / TRACE_FILE, json.dumps({"steps": steps}).encode())
    return {"from_step": min(steps), "to_step": max(steps), "final_root": steps[max(steps)]["root"]}


def _record(trace_dir: Path, state) -> dict[str, Any]:
    write_state_file(get_state_path(trace_dir, get_step(state)), state)
    hashes = compute_chunk_hashes(state)
    return {"root": root_from_leaf_hashes(hashes).hex(), "chunks": [h.hex() for h in hashes]}


def load_trace(trace_dir: Path) -> dict[int, dict[str, Any]] | None:
    """{step: {root, chunks}} of a finished trace, or None."""
    path = trace_dir / TRACE_FILE
    if not path.exists():
        return None
    return {int(step): entry for step, entry in json.loads(path.read_text())["steps"].items()}
