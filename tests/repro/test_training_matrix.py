"""CI matrix: each model trained via the CLI in every (threads, ISA) cell has one trajectory root."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.presets import example_job_spec_json
from tests.repro.test_ops_matrix import matrix_cells

ROOT = Path(__file__).resolve().parents[2]
STEPS = 2


def train(spec_path: Path, out: Path, threads: int, capability: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "job",
        "run-local",
        str(spec_path),
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--cpu-capability",
        capability,
        "--no-progress",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt-tiny"])
def test_one_trajectory_root_per_model_across_the_matrix(model, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(example_job_spec_json(model, STEPS, "repro")))
    roots = {}
    for threads, capability in matrix_cells():
        result = train(spec_path, tmp_path / f"run-{threads}-{capability}", threads, capability)
        roots[(threads, capability)] = (result["trajectory_root"], result["final_state_root"])
    assert len(roots) >= 4
    assert len(set(roots.values())) == 1, roots
