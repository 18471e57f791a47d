"""A person's path end to end, every part real: a module written in the tests, exported with
`veritrain model export`, posted with `veritrain job submit --file` (the graph uploaded first),
trained by a solver daemon and replayed by a verifier daemon (subprocesses) against a coordinator
subprocess; `job status` shows the evaluation as verified once settled, and `job download` writes
the model (batch-norm statistics included) with those metrics."""

import json
import subprocess
import sys

import pytest
from safetensors import safe_open

from cli.demo import STAKE
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import FINAL_JOB_STATES, JobState
from tests.daemons.test_daemons import ROOT, Market, start_registered_verifier, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def market(tmp_path):
    m = Market(tmp_path)
    yield m
    m.close()


def veritrain(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli.main", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_an_exported_model_is_trained_verified_and_downloaded_with_its_metrics(market, exported):
    graph = exported["resnet"].path
    example = veritrain("job", "example", "--onnx", graph, "--steps", "8")
    assert example.returncode == 0, example.stderr
    spec = json.loads(example.stdout)
    spec["checkpoint_interval"] = 4  # two segments; the evaluated last one is always audited
    spec_path = market.tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    job_id = compute_job_id(parse_job_spec(spec)).hex()

    market.start_coordinator()
    submitter = market.party("submitter")
    market.party("solver")
    market.party("verifier")
    start_registered_verifier(market, submitter)
    market.daemon("solver", "solver", "--price", "600", "--stake", str(STAKE))
    key = ("--coordinator", market.url, "--key", market.tmp / "submitter.key")
    submitted = veritrain(
        "job", "submit", spec_path, "--file", graph, "--bounty", 1000, "--min-stake", STAKE,
        "--verifier-fee", 50, "--segments", 1, "--bidding-s", 20, *key, "--json",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr

    wait_until(lambda: submitter.get_job(job_id).state in FINAL_JOB_STATES, 300, "settlement")
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.SETTLED, "accepted")
    log = [json.loads(e.body) for e in submitter.iter_log_entries(submitter.get_tree_head().size)]
    [committed] = [e["data"] for e in log if e["kind"] == "job.committed"]
    assert committed["segments"] == [1]  # the final segment, where the metrics are computed

    status = veritrain("job", "status", job_id, *key[:2], "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["metrics_verified"] and set(shown["metrics"]) == {"eval_loss", "eval_accuracy"}

    model = market.tmp / "model.safetensors"
    download = veritrain("job", "download", job_id, "--out", model, *key[:2], "--json")
    assert download.returncode == 0, download.stderr
    assert json.loads(download.stdout)["metrics"] == shown["metrics"]
    with safe_open(str(model), "pt") as stored:
        names = set(stored.keys())
        assert json.loads(stored.metadata()["veritrain.metrics"]) == shown["metrics"]
    assert any("running_mean" in n for n in names) and any("conv1.weight" in n for n in names)
