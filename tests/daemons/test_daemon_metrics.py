"""A real solver daemon subprocess with `--metrics-port`, training a job against a real
coordinator subprocess: its Prometheus endpoint answers in the text format with every daemon
metric, and jobs held, steps and stake at risk agree with what the coordinator's API reports."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.demo import STAKE, _free_port
from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState
from tests.daemons.test_daemons import Market, post_job, wait_until

pytestmark = pytest.mark.slow
DAEMON_METRICS = {
    "veritrain_daemon_steps_total",
    "veritrain_daemon_steps_per_second",
    "veritrain_daemon_jobs_held",
    "veritrain_daemon_earnings_total",
    "veritrain_daemon_losses_total",
    "veritrain_daemon_stake_at_risk",
    "veritrain_daemon_worker_restarts_total",
}


@pytest.fixture
def market(tmp_path):
    m = Market(tmp_path)
    yield m
    m.close()


def scrape(port: int) -> dict[str, float] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.TransportError:
        return None  # not listening yet
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_solver_metrics_match_the_coordinator(market):
    market.start_coordinator()
    submitter, solver = market.party("submitter"), market.party("solver")
    spec = example_job_spec_json("mlp", steps=3000)
    spec["checkpoint_interval"] = 300
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    port = _free_port()
    market.daemon(
        "solver",
        "solver",
        "--price",
        "600",
        "--stake",
        str(STAKE),
        "--only-job",
        job_id,
        "--metrics-port",
        str(port),
    )
    idle = wait_until(lambda: scrape(port), 60, "the metrics endpoint")
    assert set(idle) >= DAEMON_METRICS, DAEMON_METRICS - set(idle)
    assert idle["veritrain_daemon_jobs_held"] == 0

    post_job(submitter, spec, 1)
    training = wait_until(
        lambda: (
            (m := scrape(port))
            and m["veritrain_daemon_jobs_held"] == 1
            and m["veritrain_daemon_steps_total"] > 0
            and m["veritrain_daemon_stake_at_risk"] > 0
            and m
        ),
        120,
        "the solver to train and report it",
    )
    job = submitter.get_job(job_id)
    assert job.solver == solver.public_key
    assert job.state in (JobState.AWARDED, JobState.VERIFYING)
    held = [
        j
        for state in (JobState.AWARDED, JobState.VERIFYING)
        for j in submitter.list_jobs(state=state)
        if j.solver == solver.public_key
    ]
    assert training["veritrain_daemon_jobs_held"] == len(held) == 1
    stakes = solver.get_account().escrow_and_stakes
    assert training["veritrain_daemon_stake_at_risk"] == sum(
        v for k, v in stakes.items() if k.startswith("stake:")
    )
    assert training["veritrain_daemon_stake_at_risk"] == STAKE
    assert training["veritrain_daemon_worker_restarts_total"] == 0
    assert training["veritrain_daemon_losses_total"] == 0  # locking a stake is no loss
