"""Warm workers: the same bits as a fresh worker and as `protocol.referee` in-process, typed errors
across the pipe, and recovery after the child dies."""

import pytest

from protocol.errors import CheckpointCorrupt, InvalidInput
from protocol.presets import example_job_spec_json
from protocol.referee import compute_referee_chunk
from protocol.spec import parse_job_spec
from protocol.state import compute_state_root, encode_state
from protocol.training import build_program
from sdk.warm_worker import WorkerPool
from sdk.worker import run_worker

pytestmark = pytest.mark.slow


def test_warm_step_matches_a_fresh_worker_and_survives_errors_and_death(tmp_path):
    spec_json = example_job_spec_json("mlp", steps=4)
    program = build_program(parse_job_spec(spec_json))
    state = program.initial_state()
    path = tmp_path / "s.safetensors"
    path.write_bytes(encode_state(state))
    root = compute_state_root(state)
    request = {
        "command": "step",
        "spec": spec_json,
        "state_path": str(path),
        "agreed_root": root.hex(),
        "chunk": 1,
    }
    profile = parse_job_spec(spec_json).profile
    fresh = run_worker(request, profile, timeout=120)
    pool = WorkerPool()
    try:
        pool.prewarm(profile)
        assert pool.run(request, profile, 120) == fresh
        with pytest.raises(CheckpointCorrupt, match="does not match"):
            pool.run({**request, "agreed_root": "00" * 32}, profile, 120)
        with pytest.raises(InvalidInput) as refused:
            pool.run({**request, "chunk": "1"}, profile, 120)
        assert refused.value.field == "chunk"
        assert pool.run(request, profile, 120) == fresh  # an error does not kill it
        pool.get(profile).process.kill()
        assert pool.run(request, profile, 120) == fresh  # a dead one is replaced
    finally:
        pool.close()


def test_the_step_task_is_protocol_referee(tmp_path):
    """The worker's step is `protocol.referee.compute_referee_chunk`, bit for bit (a repro job, so
    this process's threads and ISA cannot make the in-process answer differ)."""
    spec_json = example_job_spec_json("mlp", steps=4, profile="repro")
    program = build_program(parse_job_spec(spec_json))
    state = program.step(program.initial_state())
    path = tmp_path / "s.safetensors"
    path.write_bytes(encode_state(state))
    root = compute_state_root(state)
    request = {
        "command": "step",
        "spec": spec_json,
        "state_path": str(path),
        "agreed_root": root.hex(),
        "chunk": 2,
    }
    result = run_worker(request, parse_job_spec(spec_json).profile, timeout=120)
    assert result == {
        "chunk_hash": compute_referee_chunk(program, encode_state(state), root, 2).hex()
    }


def test_the_pool_keeps_at_most_its_bound_of_idle_workers():
    """Profile labels are the poster's choice: each new one must not keep another ~365 MB
    interpreter alive for ever. The least recently used idle worker is closed; a busy one never."""
    spec_json = example_job_spec_json("mlp", steps=4)
    profiles = []
    for threads in (1, 2, 3):
        spec_json["profile"]["intra_op_threads"] = threads
        profiles.append(parse_job_spec(spec_json).profile)
    pool = WorkerPool(max_workers=2)
    try:
        pool.prewarm(profiles[0])
        first = pool.get(profiles[0])
        assert first.process.poll() is None
        pool.get(profiles[1])
        busy = pool.get(profiles[1])
        with busy.lock:  # profiles[1] is running a request: it must survive the next eviction
            pool.get(profiles[0])
            pool.get(profiles[2])
        # profiles[0] was used more recently than profiles[1], but only it was idle
        assert list(pool.workers) == [profiles[1].label, profiles[2].label]
        assert first.process.poll() is not None  # its interpreter is gone
    finally:
        pool.close()
