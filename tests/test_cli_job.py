"""`veritrain job …` end to end, in real subprocesses."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save

from protocol.presets import example_job_spec_json
from protocol.spec import parse_job_spec

pytestmark = pytest.mark.slow


def veritrain(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def write_example(tmp_path, model, steps, **changes):
    spec = example_job_spec_json(model, steps)
    spec.update(changes)
    path = tmp_path / f"{model}.json"
    path.write_text(json.dumps(spec))
    return path


def test_job_example_prints_a_valid_spec():
    result = veritrain("job", "example", "--model", "gpt-tiny", "--steps", "7")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == example_job_spec_json("gpt-tiny", 7, "repro")  # default
    pinned = veritrain(
        "job", "example", "--model", "gpt-tiny", "--steps", "7", "--profile", "pinned"
    )
    assert json.loads(pinned.stdout) == example_job_spec_json("gpt-tiny", 7, "pinned")


@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt-tiny"])
def test_same_profile_same_roots_whatever_the_outer_thread_settings(tmp_path, model):
    spec = write_example(tmp_path, model, 6, checkpoint_interval=3)
    runs = []
    for threads in ("1", "2"):
        out = tmp_path / f"run-{threads}"
        result = veritrain(
            "job",
            "run-local",
            spec,
            "--out",
            out,
            env_extra={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
        )
        assert result.returncode == 0, result.stderr
        runs.append(last_json(result.stdout))
    assert runs[0]["trajectory_root"] == runs[1]["trajectory_root"]
    assert runs[0]["checkpoints"] == 3 and len(bytes.fromhex(runs[0]["final_state_root"])) == 32
    for segment in range(2):
        replay = veritrain(
            "job",
            "replay",
            tmp_path / "run-1",
            "--segment",
            segment,
            env_extra={"OMP_NUM_THREADS": "2"},
        )
        assert replay.returncode == 0, replay.stderr
        body = last_json(replay.stdout)
        assert body["match"] and body["segment"] == segment and body["expected"] == body["computed"]


def test_resume_after_interruption_gives_the_same_trajectory(tmp_path):
    spec = write_example(tmp_path, "mlp", 9, checkpoint_interval=3)
    full = last_json(veritrain("job", "run-local", spec, "--out", tmp_path / "full").stdout)
    partial = tmp_path / "partial"
    assert veritrain("job", "run-local", spec, "--out", partial).returncode == 0
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["checkpoints"] = manifest["checkpoints"][:2]  # as if killed after checkpoint 1
    manifest.update(complete=False)
    (partial / "manifest.json").write_text(json.dumps(manifest))
    resumed = last_json(veritrain("job", "run-local", spec, "--out", partial).stdout)
    assert resumed["resumed_from_step"] == 3
    assert resumed["trajectory_root"] == full["trajectory_root"]


def test_replay_reports_mismatch_and_corruption(tmp_path):
    spec = write_example(tmp_path, "mlp", 4, checkpoint_interval=2)
    run = tmp_path / "run"
    assert veritrain("job", "run-local", spec, "--out", run).returncode == 0
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["checkpoints"][2]["state_root"] = "11" * 32
    (run / "manifest.json").write_text(json.dumps(manifest))
    mismatch = veritrain("job", "replay", run, "--segment", 1)
    assert mismatch.returncode == 1
    assert last_json(mismatch.stdout)["match"] is False
    checkpoint = run / "checkpoints" / "000000.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-3] ^= 0x40
    checkpoint.write_bytes(bytes(data))
    corrupt = veritrain("job", "replay", run, "--segment", 0)
    assert corrupt.returncode == 2
    assert "chunk" in corrupt.stderr and "Traceback" not in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1


def one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0]


def test_bad_inputs_are_one_line_errors_naming_the_field(tmp_path):
    missing = veritrain("job", "run-local", tmp_path / "nope.json", "--out", tmp_path / "o")
    one_line_error(missing, "no such file")
    (tmp_path / "broken.json").write_text("{not json")
    one_line_error(
        veritrain("job", "run-local", tmp_path / "broken.json", "--out", tmp_path / "o"),
        "not valid JSON",
    )
    spec = write_example(tmp_path, "mlp", 4)
    data = json.loads(spec.read_text())
    data["model"]["name"] = "resnet"
    spec.write_text(json.dumps(data))
    one_line_error(veritrain("job", "run-local", spec, "--out", tmp_path / "o"), "model.name")
    one_line_error(veritrain("job", "replay", tmp_path / "empty", "--segment", 0), "manifest.json")


def test_dataset_hash_mismatch_is_refused(tmp_path):
    blob = save({"inputs": torch.rand(40, 8), "targets": torch.randint(0, 2, (40,))})
    dataset = tmp_path / "data.safetensors"
    dataset.write_bytes(blob)
    spec = write_example(
        tmp_path,
        "mlp",
        4,
        dataset={"kind": "safetensors", "sha256": hashlib.sha256(b"other").hexdigest()},
    )
    one_line_error(
        veritrain("job", "run-local", spec, "--out", tmp_path / "o", "--dataset", dataset),
        "is not a file the spec names by SHA-256",
    )
    spec = write_example(
        tmp_path,
        "mlp",
        4,
        dataset={"kind": "safetensors", "sha256": hashlib.sha256(blob).hexdigest()},
    )
    ok = veritrain("job", "run-local", spec, "--out", tmp_path / "ok", "--dataset", dataset)
    assert ok.returncode == 0, ok.stderr


def test_profile_the_machine_cannot_honour_is_refused(tmp_path):
    spec = write_example(tmp_path, "mlp", 4)
    data = json.loads(spec.read_text())
    data["profile"]["torch_version"] = "2.99.0"
    spec.write_text(json.dumps(data))
    one_line_error(veritrain("job", "run-local", spec, "--out", tmp_path / "o"), "torch 2.99.0")
    pinned = write_example(tmp_path, "mlp", 4)
    one_line_error(
        veritrain("job", "run-local", pinned, "--out", tmp_path / "p", "--threads", "2"),
        "repro profiles only",
    )


def test_job_example_cuts_a_repro_batch_into_blocks_and_refuses_bad_counts():
    result = veritrain(
        "job", "example", "--model", "gpt-tiny", "--profile", "repro", "--batch-blocks", "4"
    )
    assert result.returncode == 0, result.stderr
    spec = parse_job_spec(json.loads(result.stdout))
    assert spec.profile.batch_blocks == 4 and spec.profile.label.startswith("repro:fo2:")
    one_line_error(
        veritrain("job", "example", "--model", "mlp", "--profile", "pinned", "--batch-blocks", "2"),
        "repro",
    )
    one_line_error(
        veritrain("job", "example", "--model", "mlp", "--profile", "repro", "--batch-blocks", "3"),
        "power of two",
    )
