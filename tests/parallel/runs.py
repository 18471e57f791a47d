"""Shared by the data-parallel tests: blocked specs and `veritrain job run-local` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

from protocol.presets import example_job_spec_json

ROOT = Path(__file__).resolve().parents[2]


def blocked_spec_json(model: str, steps: int, batch_blocks: int, **changes) -> dict:
    """The model's repro example with its batch cut into `batch_blocks` blocks."""
    spec = example_job_spec_json(model, steps, "repro")
    spec["profile"]["batch_blocks"] = batch_blocks
    spec.update({"checkpoint_interval": 1, **changes})
    return spec


def write_spec(directory: Path, spec: dict) -> Path:
    path = directory / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def run_local_command(spec_path: Path, out: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli.main",
        "job",
        "run-local",
        str(spec_path),
        "--out",
        str(out),
        "--no-progress",
        *options,
    ]


def run_local(spec_path: Path, out: Path, *options: str, timeout: float = 300):
    """The finished process (never raises on a non-zero exit: the caller asserts)."""
    return subprocess.run(
        run_local_command(spec_path, out, *options),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def train(spec_path: Path, out: Path, *options: str) -> dict:
    done = run_local(spec_path, out, *options)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
