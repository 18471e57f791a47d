"""Daemons as real subprocesses against a real coordinator subprocess: the demo's JSON, a solver
killed with SIGKILL mid-training that resumes and is paid, and a coordinator killed with SIGKILL
in the middle of a dispute that resolves after a restart with a clean audit."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from cli.audit_cmd import check_coordinator
from cli.demo import COORDINATOR_ENV, STAKE, _free_port
from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import FINAL_JOB_STATES, DisputeStatus, JobState
from sdk.client import CoordinatorClient
from sdk.keys import create_key_file
from tests.coordinator.server import get_postgres_url, postgres_schema

pytestmark = pytest.mark.slow
# The demo's timing, but moves may take longer: nobody here is meant to be late, and a loaded
# 2-core machine (a restarted coordinator, a suite running beside) must not make them so.
MARKET_ENV = {**COORDINATOR_ENV, "VERITRAIN_MOVE_TIMEOUT_S": "120"}
ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


class Market:
    def __init__(self, tmp: Path):
        self.tmp, self.port, self.processes = tmp, _free_port(), []
        self.url = f"http://127.0.0.1:{self.port}"

    def start_coordinator(self) -> subprocess.Popen:
        process = spawn(
            [
                "coordinator",
                "serve",
                "--dev",
                "--port",
                str(self.port),
                "--database-url",
                f"sqlite:///{self.tmp / 'c.db'}",
                "--key-file",
                str(self.tmp / "c.key"),
                "--log-level",
                "warning",
            ],
            self.tmp / "coordinator.log",
            MARKET_ENV,
        )
        self.processes.append(process)
        for _ in range(150):
            try:
                httpx.get(self.url + "/v1/info", timeout=1).raise_for_status()
                return process
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("coordinator did not start")

    def party(self, name: str) -> CoordinatorClient:
        key = create_key_file(self.tmp / f"{name}.key")
        client = CoordinatorClient(self.url, key, timeout=httpx.Timeout(60, connect=5))
        client.faucet(10_000)
        return client

    def daemon(self, role: str, name: str, *extra: str) -> subprocess.Popen:
        state = self.tmp / name / "state.json"
        process = spawn(
            [
                role,
                "run",
                "--key",
                str(self.tmp / f"{name}.key"),
                "--coordinator",
                self.url,
                "--store",
                str(self.tmp / name),
                "--poll",
                "0.3",
                *extra,
            ],
            self.tmp / f"{name}.log",
        )
        self.processes.append(process)
        if not state.exists():  # up and polling before anything is posted
            wait_until(state.exists, 120, f"{name} to start")
        return process

    def close(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def market(tmp_path):
    m = Market(tmp_path)
    yield m
    m.close()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def post_job(submitter, spec, segments: int) -> str:
    submitter.submit_job(
        spec, 1000, min_stake=STAKE, verifier_fee=50, num_segments=segments, bidding_s=3
    )
    return compute_job_id(parse_job_spec(spec)).hex()


def test_demo_json(tmp_path):
    """The whole demo, on two coordinator replicas sharing PostgreSQL where one is reachable
    (requests spread over both, the cheater's dispute ruled once) and on the embedded SQLite
    coordinator elsewhere: one run of the demo's minute-long market instead of two."""
    with contextlib.ExitStack() as stack:
        where = []
        if get_postgres_url() is not None:
            url = stack.enter_context(postgres_schema(get_postgres_url()))
            where = ["--database-url", url, "--workers", "2"]
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "demo", "--json", "--report", str(tmp_path / "r")]
            + where,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
    summary = json.loads(out.stdout)
    assert out.returncode == 0 and summary["ok"], (summary, out.stderr[-2000:])
    by_behaviour = {j["behaviour"]: j for j in summary["jobs"] if j["behaviour"] != "honest"}
    cheat = by_behaviour["perturb-step"]
    assert (cheat["dispute_step"], cheat["state"], cheat["slashed"]) == (7, "failed", STAKE)
    honest = [j for j in summary["jobs"] if j["behaviour"] == "honest"]
    assert honest and all(j["state"] == "settled" and j["paid"] > 0 for j in honest)
    assert summary["audit_ok"] and summary["ledger_conserved"]
    assert (tmp_path / "r" / "report.html").exists()
    _check_demo_metrics(summary)


def _samples(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())
    )


def _check_demo_metrics(summary: dict) -> None:
    """What the coordinator and the daemons exposed during the demo, against what the API said:
    jobs by state and the cheater's slash; each solver trained, the cheater lost its stake."""
    coordinator = _samples(summary["metrics"]["coordinator"])
    jobs = summary["jobs"]
    for state in ("settled", "failed"):
        assert _value(coordinator, "veritrain_jobs", state=state) == sum(
            j["state"] == state for j in jobs
        )
    assert _value(coordinator, "veritrain_slashes_total", party="solver") == sum(
        j["slashed"] > 0 for j in jobs
    )
    assert _value(coordinator, "veritrain_http_requests_total") > 0
    cheater = next(j["solver"] for j in jobs if j["behaviour"] == "perturb-step")
    for name in {j["solver"] for j in jobs}:
        daemon = _samples(summary["metrics"][name])
        assert _value(daemon, "veritrain_daemon_steps_total") > 0, name
        assert "veritrain_daemon_stake_at_risk" in daemon and "veritrain_daemon_jobs_held" in daemon
    assert "veritrain_daemon_jobs_held" in _samples(summary["metrics"]["verifier-1"])
    assert cheater in summary["metrics"]


def test_solver_killed_mid_training_resumes_and_is_paid(market):
    market.start_coordinator()
    submitter, _ = market.party("submitter"), market.party("solver")
    market.party("verifier")
    spec = example_job_spec_json("mlp", steps=3000)
    spec["checkpoint_interval"] = 300
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    start_registered_verifier(market, submitter)
    solver = market.daemon(
        "solver", "solver", "--price", "600", "--stake", str(STAKE), "--only-job", job_id
    )
    post_job(submitter, spec, 1)
    run = market.tmp / "solver" / "jobs" / job_id / "checkpoints"
    wait_until(
        lambda: run.exists() and len(list(run.glob("*.safetensors"))) >= 3, 120, "checkpoints"
    )
    solver.send_signal(signal.SIGKILL)
    solver.wait()
    done_before = len(list(run.glob("*.safetensors")))
    assert done_before < 11, "training finished before the kill: make the job longer"
    market.daemon(
        "solver",
        "solver",
        "--price",
        "600",
        "--stake",
        str(STAKE),
        "--only-job",
        job_id,
        "--prune-finished",
    )
    wait_until(lambda: submitter.get_job(job_id).state in FINAL_JOB_STATES, 240, "settlement")
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.SETTLED, "accepted")
    assert check_coordinator(submitter).ok
    # settled: nothing more is ever asked of it, so --prune-finished frees its checkpoints
    wait_until(lambda: not run.parent.exists(), 30, "the finished run to be pruned")
    _check_only_wanted_uploads_and_the_model_downloads(market, submitter, job)


def _check_only_wanted_uploads_and_the_model_downloads(market, submitter, job) -> None:
    """Of 11 checkpoints the solver uploaded the sampled segment's two and the final model, no
    more; the submitter downloads that model, checked against the committed model root."""
    log = [json.loads(e.body) for e in submitter.iter_log_entries(submitter.get_tree_head().size)]
    [segment] = next(e["data"]["segments"] for e in log if e["kind"] == "job.committed")
    uploaded = {e["data"]["index"] for e in log if e["kind"] == "checkpoint.uploaded"}
    assert uploaded == {segment, segment + 1, job.num_checkpoints - 1}
    model = market.tmp / "model.safetensors"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "job",
            "download",
            job.job_id,
            "--out",
            str(model),
            "--coordinator",
            market.url,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["final_model_root"] == job.final_model_root
    assert model.stat().st_size > 0


def start_registered_verifier(market: Market, submitter: CoordinatorClient) -> str:
    """Start the "verifier" daemon and wait until its standing stake is on file; its key."""
    market.daemon("verifier", "verifier", "--stake", "500")
    verifier_key = CoordinatorClient(market.url, _key(market, "verifier")).public_key
    wait_until(
        lambda: submitter.get_account(verifier_key).escrow_and_stakes.get("stake:"),
        60,
        "verifier registration",
    )
    return verifier_key


def _key(market: Market, name: str) -> SigningKey:
    return SigningKey(bytes.fromhex((market.tmp / f"{name}.key").read_text().strip()))


def test_coordinator_killed_mid_dispute_resolves_after_restart(market):
    coordinator = market.start_coordinator()
    submitter = market.party("submitter")
    market.party("cheater")
    market.party("verifier")
    spec = example_job_spec_json("mlp", steps=20)
    spec["checkpoint_interval"] = 20
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    verifier_key = start_registered_verifier(market, submitter)
    market.daemon(
        "solver",
        "cheater",
        "--price",
        "600",
        "--stake",
        str(STAKE),
        "--only-job",
        job_id,
        "--behaviour",
        "perturb-step",
    )
    post_job(submitter, spec, 1)
    wait_until(lambda: submitter.list_disputes(party=verifier_key), 120, "a dispute")
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    time.sleep(1)  # the daemons see connection errors and keep retrying
    market.start_coordinator()
    ruled = wait_until(
        lambda: submitter.list_disputes(party=verifier_key, status=DisputeStatus.RULED),
        180,
        "the ruling",
    )
    assert (ruled[0].winner, ruled[0].dispute_step) == ("verifier", 7)
    wait_until(lambda: submitter.get_job(job_id).state is JobState.FAILED, 60, "the job to fail")
    report = check_coordinator(submitter)
    assert report.ok, report.problems
