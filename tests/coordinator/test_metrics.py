"""`GET /metrics` on a real server (SQLite and PostgreSQL): a small market runs (a job in
bidding, one verifying, one cancelled, one whose no-show solver was slashed), and what the
Prometheus exposition says matches what the API reports: jobs by state, slashes, ledger totals,
verification coverage. Request counters grow with requests, labelled by route template, so 50
requests to distinct job ids add no series."""

import json
import math
import uuid
from collections import Counter, defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol.wire import DisputeStatus, JobState
from tests.coordinator.market import (
    funded,
    open_verification,
    slash_a_no_show_solver,
    tiny_spec_json,
    train_tiny_job,
)

SLASHED = 400
JOB_ROUTE = "/v1/jobs/{job_id}"


def scrape(url: str) -> dict[str, list]:
    """Sample name → its samples, from the text exposition format."""
    response = httpx.get(url + "/metrics", timeout=30)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matching = [
        s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(matching)


def test_metrics_match_what_the_api_reports(server, make_client, tmp_path):
    trained = train_tiny_job(tmp_path / "run")
    submitter, solver, verifier = (funded(make_client) for _ in range(3))
    no_show = funded(make_client)
    slash_a_no_show_solver(submitter, no_show, SLASHED)
    unwanted = submitter.submit_job(tiny_spec_json(seed=63), 1000, bidding_s=30).job_id
    open_verification(submitter, solver, verifier, trained)  # advances the clock past bidding
    submitter.sweep()
    assert submitter.get_job(unwanted).state is JobState.CANCELLED
    submitter.submit_job(tiny_spec_json(seed=64), 1000, bidding_s=30)  # stays in bidding

    samples = scrape(server.url)

    # jobs by state, as GET /v1/jobs lists them
    for state in JobState:
        listed = submitter.list_jobs(state=state)
        assert value(samples, "veritrain_jobs", state=state.value) == len(listed), state
    assert {s.labels["state"]: s.value for s in samples["veritrain_jobs"]} == {
        "bidding": 1,
        "awarded": 0,
        "verifying": 1,
        "settled": 0,
        "failed": 1,
        "cancelled": 1,
    }

    # slashes, as the public log records them
    size = submitter.get_tree_head().size
    kinds = Counter(json.loads(e.body)["kind"] for e in submitter.get_log_entries(0, size))
    assert value(samples, "veritrain_slashes_total", party="solver") == kinds["job.solver_slashed"]
    assert value(samples, "veritrain_slashes_total", party="verifier") == kinds["verifier.slashed"]
    assert value(samples, "veritrain_slashes_total") == 1

    # ledger totals by account kind, as GET /v1/ledger/accounts lists every balance
    by_kind: Counter = Counter()
    for account in submitter.iter_ledger_accounts():
        by_kind[account.account.split(":")[0]] += account.balance
    for kind in ("available", "escrow", "stake", "burn", "fees", "mint"):
        assert value(samples, "veritrain_ledger_balance", kind=kind) == by_kind[kind], kind
    assert sum(s.value for s in samples["veritrain_ledger_balance"]) == 0  # conserved
    assert value(samples, "veritrain_ledger_balance", kind="burn") > 0  # the slash burned some

    # open disputes, blobs, coverage of the verifying job's segments
    assert value(samples, "veritrain_disputes_open") == len(
        submitter.list_disputes(status=DisputeStatus.OPEN)
    )
    assert value(samples, "veritrain_blob_bytes", kind="checkpoint") > 0
    job = submitter.get_job(trained.job_id)
    sampled = {a.segment for a in submitter.get_job_assignments(trained.job_id)}
    assert value(samples, "veritrain_verification_coverage_ratio") == pytest.approx(
        len(sampled) / (job.num_checkpoints - 1)
    )
    assert value(samples, "veritrain_sweeper_lag_seconds") == 0  # nothing overdue after a sweep
    assert value(samples, "veritrain_ruling_duration_seconds_count") == 0

    # an overdue deadline nobody swept yet: the lag is how long ago it passed
    submitter.advance_clock(1000)
    lag = value(scrape(server.url), "veritrain_sweeper_lag_seconds")
    assert 900 < lag < 1100 and math.isfinite(lag)


def test_request_counters_grow_and_labels_stay_bounded(server, make_client):
    submitter = funded(make_client)
    job_id = submitter.submit_job(tiny_spec_json(), 1000, bidding_s=30).job_id
    before = scrape(server.url)
    for _ in range(5):
        submitter.get_job(job_id)
    after = scrape(server.url)
    labels = {"route": JOB_ROUTE, "method": "GET"}
    grew = value(after, "veritrain_http_requests_total", status="200", **labels) - value(
        before, "veritrain_http_requests_total", status="200", **labels
    )
    assert grew == 5
    timed = value(after, "veritrain_http_request_duration_seconds_count", **labels) - value(
        before, "veritrain_http_request_duration_seconds_count", **labels
    )
    assert timed == 5
    assert value(after, "veritrain_http_request_duration_seconds_sum", **labels) > 0
    # the scrape itself is a request like any other
    assert value(after, "veritrain_http_requests_total", route="/metrics", status="200") >= 1

    with httpx.Client(base_url=server.url) as http:
        for _ in range(50):
            assert http.get(f"/v1/jobs/{uuid.uuid4().hex * 2}").status_code == 404
            assert http.get(f"/no/such/{uuid.uuid4().hex}").status_code == 404
    samples = scrape(server.url)
    series = {tuple(sorted(s.labels.items())) for s in samples["veritrain_http_requests_total"]}
    routes = {dict(labels)["route"] for labels in series}
    known = set(server.app.openapi()["paths"]) | {"/metrics", "<unmatched>"}
    assert routes <= known, routes - known  # templates only, never a raw path
    assert len(series) <= 10, series  # 100 distinct paths added two series, not 100
    assert value(samples, "veritrain_http_requests_total", status="404", **labels) == 50
    assert value(samples, "veritrain_http_requests_total", route="<unmatched>") == 50


def test_metrics_is_not_in_the_api_schema(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/metrics" not in schema["paths"]
