"""`veritrain solver run --world-size N`: each awarded job is trained on the most ranks its
batch blocks allow, up to N (against an httpx.MockTransport coordinator; the worker is faked)."""

import httpx
import pytest

import solver.daemon
from protocol.presets import example_job_spec_json
from solver.daemon import SolverConfig, SolverDaemon
from tests.daemons.mock_views import PROFILE, job_view_json
from tests.daemons.test_refusals import JOB_ID, Coordinator, client_for
from tests.parallel.runs import blocked_spec_json


class WorkerCalled(Exception):
    """Stops the daemon right after it hands the request to the worker."""


def requested_world_size(tmp_path, monkeypatch, spec: dict, most: int, behaviour="honest") -> int:
    answers = {}
    client = client_for(Coordinator(answers))
    awarded = {**job_view_json(JOB_ID, spec=spec), "state": "awarded", "solver": client.public_key}
    answers[("GET", f"/v1/jobs/{JOB_ID}")] = httpx.Response(200, json=awarded)
    config = SolverConfig(
        price=1, stake=1, profiles=[PROFILE], world_size=most, behaviour=behaviour
    )
    daemon = SolverDaemon(client, tmp_path, config)
    daemon.state.data["jobs"][JOB_ID] = {"state": "awarded"}
    requests = []

    def fake_run_worker(request, profile, **kwargs):
        requests.append(request)
        raise WorkerCalled

    monkeypatch.setattr(solver.daemon, "run_worker", fake_run_worker)
    with pytest.raises(WorkerCalled):
        daemon._advance(JOB_ID)
    return requests[0]["world_size"]


@pytest.mark.parametrize(
    ("blocks", "most", "expected"), [(4, 8, 4), (4, 2, 2), (8, 3, 2), (4, 1, 1)]
)
def test_each_job_runs_on_the_most_ranks_its_blocks_allow(
    tmp_path, monkeypatch, blocks, most, expected
):
    spec = blocked_spec_json("mlp", 2, blocks)
    assert requested_world_size(tmp_path, monkeypatch, spec, most) == expected


def test_fo1_jobs_and_red_team_behaviours_run_on_one_rank(tmp_path, monkeypatch):
    fo1 = example_job_spec_json("mlp", 2, "repro")
    assert requested_world_size(tmp_path / "a", monkeypatch, fo1, 4) == 1
    blocked = blocked_spec_json("mlp", 2, 4)
    assert requested_world_size(tmp_path / "b", monkeypatch, blocked, 4, "skip-steps") == 1
