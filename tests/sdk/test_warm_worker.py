"""Warm workers: the same bits as a fresh worker, typed errors across the pipe, and recovery
after the child dies."""

import pytest

from protocol.presets import example_job_spec_json
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
    request = {"command": "step", "spec": spec_json, "state_path": str(path),
               "expected_root": compute_state_root(state).hex()}
    profile = parse_job_spec(spec_json).profile
    fresh = run_worker(request, profile, timeout=120)
    pool = WorkerPool()
    try:
        pool.prewarm(profile)
        assert pool.run(request, profile, 120) == fresh
        with pytest.raises(Exception, match="does not match"):
            pool.run({**request, "expected_root": "00" * 32}, profile, 120)
        assert pool.run(request, profile, 120) == fresh  # an error does not kill it
        pool.get(profile).process.kill()
        assert pool.run(request, profile, 120) == fresh  # a dead one is replaced
    finally:
        pool.close()
