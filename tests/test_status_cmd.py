"""`veritrain solver status` / `verifier status` (issue 16) against a real coordinator and real
daemon stores: a solver and a verifier daemon take a job to settlement; while it runs the solver's
screen says what it waits for and by when, and afterwards both say what they hold, what they
earned, and why (the public log), as JSON and as the rich screen."""

import json
import os
import subprocess
import sys

import pytest

from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import FINAL_JOB_STATES, JobState
from tests.daemons.test_daemons import (
    ROOT,
    STAKE,
    Market,
    post_job,
    start_registered_verifier,
    wait_until,
)

pytestmark = pytest.mark.slow
PRICE = 600


def status(market: Market, role: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            role,
            "status",
            "--key",
            str(market.tmp / f"{name}.key"),
            "--coordinator",
            market.url,
            "--store",
            str(market.tmp / name),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def status_json(market: Market, role: str, name: str) -> dict:
    out = status(market, role, name, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def market(tmp_path):
    m = Market(tmp_path)
    yield m
    m.close()


def test_status_of_a_solver_and_a_verifier_through_a_job(market):
    market.start_coordinator()
    submitter, solver = market.party("submitter"), market.party("solver")
    market.party("verifier")
    spec = example_job_spec_json("mlp", steps=20)
    spec["checkpoint_interval"] = 20
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    verifier_key = start_registered_verifier(market, submitter)
    market.daemon(
        "solver", "solver", "--price", str(PRICE), "--stake", str(STAKE), "--only-job", job_id
    )
    post_job(submitter, spec, 1)
    solver_state = market.tmp / "solver" / "state.json"
    wait_until(lambda: job_id in json.loads(solver_state.read_text())["jobs"], 60, "the bid")

    # While the job runs: what the solver holds and what it waits for, with a deadline.
    early = status_json(market, "solver", "solver")
    assert early["role"] == "solver" and early["account"] == solver.public_key
    (item,) = early["items"]
    assert item["job_id"] == job_id
    if item["state"] not in FINAL_JOB_STATES:
        (waiting,) = [w for w in early["waiting_for"] if w["what"] == item["what"]]
        assert waiting["deadline"] > 0 and waiting["waits_for"] == item["waits_for"]

    wait_until(
        lambda: json.loads(solver_state.read_text())["jobs"][job_id]["state"] == "settled",
        180,
        "the solver to see its job settled",
    )
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.SETTLED, "accepted")

    done = status_json(market, "solver", "solver")
    (item,) = done["items"]
    assert (item["state"], item["outcome"], item["price"]) == ("settled", "accepted", PRICE)
    assert item["waits_for"] is None and done["waiting_for"] == []
    assert done["earned"] == PRICE and done["lost"] == 0  # the stake came back whole
    settled = [m for m in done["movements"] if m["kind"] == "job.settled"]
    assert [(m["job_id"], m["change"]) for m in settled] == [(job_id, PRICE)]
    assert done["available"] == solver.get_balance()

    verifier = status_json(market, "verifier", "verifier")
    assert verifier["account"] == verifier_key and verifier["registered"] is True
    (assignment,) = verifier["items"]
    assert assignment["job_id"] == job_id and assignment["replayed"] is True
    assert assignment["state"] == "agreed" and assignment["waits_for"] is None
    assert verifier["earned"] > 0 and verifier["lost"] == 0
    assert {m["job_id"] for m in verifier["movements"] if m["change"] > 0} >= {job_id}

    screen = status(market, "solver", "solver")
    assert screen.returncode == 0, screen.stderr
    for text in ("what it holds", job_id[:12], "settled", "earned", "job.settled", "waiting for"):
        assert text in screen.stdout, (text, screen.stdout)
    screen = status(market, "verifier", "verifier")
    assert screen.returncode == 0 and "agreed" in screen.stdout, screen.stdout


def test_status_of_a_store_no_daemon_ran_in_is_one_line(market, tmp_path):
    market.start_coordinator()
    market.party("nobody")
    out = status(market, "solver", "nobody")
    assert out.returncode == 2 and out.stdout == ""
    assert (
        out.stderr.startswith("veritrain: error: store: no state.json in")
        and out.stderr[-1] == "\n"
    )
