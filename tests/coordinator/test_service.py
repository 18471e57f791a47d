"""The service as deployed: `veritrain coordinator serve`, the background sweeper, deadlines."""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from nacl.signing import SigningKey

from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from tests.coordinator.market import tiny_spec_json
from tests.coordinator.server import running_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_starts_a_dev_coordinator(tmp_path):
    port = _free_port()
    env = {**os.environ, "VERITRAIN_RUN_SWEEPER": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "coordinator",
            "serve",
            "--port",
            str(port),
            "--dev",
            "--database-url",
            f"sqlite:///{tmp_path / 'c.db'}",
            "--key-file",
            str(tmp_path / "c.key"),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.2)
        assert info["dev"] is True
        assert (tmp_path / "c.key").stat().st_mode & 0o777 == 0o600
        with CoordinatorClient(f"http://127.0.0.1:{port}", SigningKey.generate()) as client:
            assert client.faucet(5).available == 5
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _job(client):
    spec = tiny_spec_json(seed=3)
    parsed = parse_job_spec(spec)
    client.submit_job(spec, 100, min_stake=25, verifier_fee=1, bidding_s=30)
    return compute_job_id(parsed).hex(), parsed.profile.label


def test_background_sweeper_awards_without_being_asked(tmp_path):
    with (
        running_server("sqlite", tmp_path, run_sweeper=True, sweep_interval_s=0.1) as server,
        CoordinatorClient(server.url, SigningKey.generate()) as submitter,
        CoordinatorClient(server.url, SigningKey.generate()) as solver,
    ):
        submitter.faucet(5000)
        solver.faucet(5000)
        job_id, profile = _job(submitter)
        solver.bid(job_id, 90, 25, profile)
        solver.advance_clock(31)
        deadline = time.time() + 10
        while solver.get_job(job_id).state is JobState.BIDDING:
            assert time.time() < deadline, "the sweeper never awarded the job"
            time.sleep(0.1)
        assert solver.get_job(job_id).solver == solver.public_key


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_moves_after_their_deadline_are_refused(server, make_client):
    submitter, solver = make_client(SigningKey.generate()), make_client(SigningKey.generate())
    submitter.faucet(5000)
    solver.faucet(5000)
    job_id, profile = _job(submitter)
    solver.bid(job_id, 90, 25, profile)
    solver.advance_clock(31)
    solver.award(job_id)
    solver.heartbeat(job_id)
    solver.advance_clock(server.settings.heartbeat_timeout_s + 1)
    with pytest.raises(CoordinatorError) as err:  # late, although the sweeper has not run yet
        solver.heartbeat(job_id)
    assert (
        err.value.problem_code is ProblemCode.INVALID_STATE
        and "deadline" in err.value.problem["detail"]
    )
    with pytest.raises(CoordinatorError):
        solver.bid(job_id, 80, 25, profile)
