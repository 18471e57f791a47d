"""The loss curve a solver reports with its commitment (SQLite and PostgreSQL): stored as
canonical JSON, drawn on the job page as an inline SVG polyline and labelled unverified; hostile
curves (NaN, too many entries, a non-numeric key) are a 422 that stores nothing; a commitment
without a curve works as before. Also: the market page lists solvers with their locked stakes."""

import json
import math
import re

import httpx
import pytest

from coordinator.models import Job
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState
from sdk.client import CoordinatorError
from solver.daemon import read_reported_losses
from tests.coordinator.market import award_tiny_job, commit_untrained, funded, tiny_spec_json

STAKE = 400
UNVERIFIED = "reported by the solver, not verified"


def _awarded(make_client, seed: int = 71):
    submitter, solver = funded(make_client), funded(make_client)
    spec, job_id = award_tiny_job(submitter, solver, STAKE, seed)
    return solver, spec, job_id


def _commit(solver, spec, losses=None):
    return commit_untrained(solver, spec, 3, **({} if losses is None else {"losses": losses}))


def _stored(server, job_id: str) -> str | None:
    with server.app.state.runtime.db.read() as session:
        return session.query(Job).filter_by(job_id=job_id).one().reported_losses


def _job_page(server, job_id: str) -> str:
    response = httpx.get(f"{server.url}/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text[:500]
    return response.text


def test_reported_curve_is_stored_and_drawn_as_svg(server, make_client):
    solver, spec, job_id = _awarded(make_client)
    curve = {step: 2.0 * math.exp(-step / 40) + 0.1 for step in range(0, 250, 5)}  # 50 points
    assert _commit(solver, spec, curve).state is JobState.VERIFYING
    stored = json.loads(_stored(server, job_id))
    assert stored == {str(k): v for k, v in curve.items()}
    assert _stored(server, job_id) == json.dumps(stored, sort_keys=True, separators=(",", ":"))

    page = _job_page(server, job_id)
    assert UNVERIFIED in page and "no loss curve reported" not in page
    [points] = re.findall(r'<polyline[^>]* points="([^"]*)"', page)
    pairs = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(pairs) == len(curve)
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    assert xs == sorted(xs) and ys == sorted(ys)  # steps left to right, falling loss goes down
    assert 'id="step-min">0<' in page and 'id="step-max">245<' in page
    assert f'id="loss-max">{max(curve.values()):.6g}<' in page
    assert f'id="loss-min">{min(curve.values()):.6g}<' in page
    # the curve is not part of what was signed or logged
    assert "losses" not in json.dumps([e for e in solver.get_log_entries(0, 100)], default=str)


@pytest.mark.parametrize(
    "losses",
    [
        {0: float("nan")},
        {0: 1.0, 1: float("inf")},
        {step: 1.0 for step in range(10_001)},
        {"0": 1.0, "ten": 0.5},
        {"-1": 1.0},
        {"0": "1.0"},
    ],
    ids=["nan", "inf", "10001-entries", "non-numeric-key", "negative-key", "string-loss"],
)
def test_hostile_curves_are_422_and_store_nothing(server, make_client, losses):
    solver, spec, job_id = _awarded(make_client)
    with pytest.raises(CoordinatorError) as err:
        _commit(solver, spec, losses)
    assert err.value.status == 422, err.value.problem
    job = solver.get_job(job_id)
    assert job.state is JobState.AWARDED and job.trajectory_root is None
    assert _stored(server, job_id) is None
    assert "no loss curve reported" in _job_page(server, job_id)


def test_commitment_without_a_curve_still_works(server, make_client):
    solver, spec, job_id = _awarded(make_client)
    assert _commit(solver, spec).state is JobState.VERIFYING
    assert _stored(server, job_id) is None
    page = _job_page(server, job_id)
    assert "no loss curve reported" in page and "<polyline" not in page


def test_market_lists_solvers_with_their_locked_stakes(server, make_client):
    solver, _, job_id = _awarded(make_client)
    loser = funded(make_client)
    spec = tiny_spec_json(seed=72)
    other = compute_job_id(parse_job_spec(spec)).hex()
    funded(make_client).submit_job(spec, 1000, min_stake=STAKE, bidding_s=30)
    loser.bid(other, 500, STAKE + 7, parse_job_spec(spec).profile.label)
    page = httpx.get(server.url + "/", timeout=30).text
    section = page[page.index('id="solvers"') :]
    rows = {
        key: [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row)]
        for key, row in re.findall(r'title="([0-9a-f]{64})".*?</td>(.*?)</tr>', section, re.S)
    }
    assert rows[solver.public_key] == [1, 1, STAKE]  # bids, jobs won, stake locked on jobs
    assert rows[loser.public_key] == [1, 0, STAKE + 7]  # a bid's stake is held too


def test_solver_daemon_thins_its_curve(tmp_path):
    (tmp_path / "losses.json").write_text(json.dumps({str(i): 1 / (i + 1) for i in range(4321)}))
    curve = read_reported_losses(tmp_path)
    assert len(curve) == 1000 and min(curve) == 0 and max(curve) == 4320
    assert list(curve) == sorted(curve)
    (tmp_path / "losses.json").write_text(json.dumps({"0": 1.0, "1": float("nan")}))
    assert read_reported_losses(tmp_path) == {0: 1.0}
    assert read_reported_losses(tmp_path / "missing") is None
