"""A rank killed mid-step fails the run in one clear line, without a hang, and the same command
resumes from the last checkpoint to the trajectory of an uninterrupted run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.parallel.runs import (
    ROOT,
    blocked_spec_json,
    run_local_command,
    train,
    write_spec,
)

pytestmark = pytest.mark.slow
STEPS = 30
KILL_AFTER_CHECKPOINTS = 3  # steps 0, 5 and 10 are on disk when a rank dies
FAILURE_DEADLINE_S = 120  # the process group's timeout is 300 s: failing sooner means no wait on it


def compute_children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def find_rank_pids(root_pid: int) -> list[int]:
    """The ranks under `veritrain job run-local` (CLI → worker → fork server → ranks), in the
    order they were forked, which is rank order."""
    found, frontier = [], [root_pid]
    for _ in range(3):
        frontier = [child for pid in frontier for child in compute_children(pid)]
    for pid in frontier:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline:
            found.append(pid)
    return sorted(found)


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def count_checkpoints(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["checkpoints"])
    except (OSError, ValueError):
        return 0  # not written yet, or caught mid-rename


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_rank_fails_the_step_and_the_run_resumes_to_the_same_root(tmp_path):
    # a wide mlp and a large batch: a step takes long enough to be caught in the middle
    spec = blocked_spec_json(
        "mlp", STEPS, 2, batch_size=1024, checkpoint_interval=5, schedule={"name": "constant"}
    )
    spec["model"]["config"] = {"hidden": [1024, 1024], "dropout": 0.1}  # ~0.1 s a step
    spec_path = write_spec(tmp_path, spec)
    out = tmp_path / "parallel"
    options = ("--world-size", "2", "--threads", "1")
    process = subprocess.Popen(
        run_local_command(spec_path, out, *options),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: count_checkpoints(out) >= KILL_AFTER_CHECKPOINTS, 120, "checkpoints")
        ranks = wait_for(lambda: find_rank_pids(process.pid), 10, "the ranks")
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=FAILURE_DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
    lines = stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1, stderr
    assert "rank 1 was killed by SIGKILL" in lines[0]
    assert "rank 0: " in lines[0]  # the survivor failed its collective and said so itself
    assert "run it again to resume" in lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["checkpoints"]) < STEPS // 5 + 1
    assert not any(is_running(pid) for pid in ranks)  # no rank outlives the failed run

    resumed = train(spec_path, out, *options)
    uninterrupted = train(spec_path, tmp_path / "one-process", "--threads", "1")
    assert resumed["resumed_from_step"] >= 5 * (KILL_AFTER_CHECKPOINTS - 1)
    assert resumed["complete"]
    assert resumed["trajectory_root"] == uninterrupted["trajectory_root"]
