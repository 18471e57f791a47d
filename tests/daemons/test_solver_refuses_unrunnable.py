"""The daemons run the submission validator (`protocol.training.check_runnable_spec`) before they
bid or replay: a job they cannot run (here one stored before today's rules, as a MockTransport
coordinator serves it) is refused once and remembered, never bid on, and does not use up
`max_jobs`, so the solver still bids on a good job afterwards."""

import copy

import httpx
from nacl.signing import SigningKey

from protocol.limits import MAX_STATE_BYTES
from protocol.presets import example_job_spec_json
from sdk.client import CoordinatorClient
from sdk.daemon import compute_default_max_state_bytes
from sdk.responses import JobView, parse_response
from solver.daemon import SolverConfig, SolverDaemon
from tests.daemons.mock_views import PROFILE, job_view_json
from verifier.daemon import VerifierConfig, VerifierDaemon

BAD, GOOD = "ba" * 32, "90" * 32


def poisoned_spec() -> dict:
    spec = copy.deepcopy(example_job_spec_json("mlp"))
    spec["model"]["config"] = {"hidden": [8192] * 8}  # ~0.5 G parameters: no checkpoint fits
    return spec


class Coordinator:
    """Lists the poisoned job first; `good_listed` adds the good one (a later round)."""

    def __init__(self):
        self.good_listed = False
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        self.seen.append(route)
        jobs = [job_view_json(BAD, 1)] + ([job_view_json(GOOD, 2)] if self.good_listed else [])
        bodies = {
            ("GET", "/v1/jobs"): {"jobs": jobs},
            ("GET", f"/v1/jobs/{BAD}"): job_view_json(BAD, 1, poisoned_spec()),
            ("GET", f"/v1/jobs/{GOOD}"): job_view_json(GOOD, 2, example_job_spec_json("mlp")),
            ("POST", f"/v1/jobs/{GOOD}/bids"): {"job_id": GOOD, "state": "bidding", "log_index": 3},
            ("GET", "/v1/disputes"): {"disputes": []},
            ("POST", "/v1/verifiers"): {"public_key": "ef" * 32, "profiles": [PROFILE], "stake": 5},
            ("GET", "/v1/assignments"): {
                "assignments": [
                    {
                        "id": 7,
                        "job_id": BAD,
                        "verifier": "ef" * 32,
                        "segment": 0,
                        "state": "assigned",
                        "deadline": 60.0,
                    }
                ]
            },
        }
        return httpx.Response(200, json=bodies[route])


def client_for(coordinator: Coordinator) -> CoordinatorClient:
    return CoordinatorClient(
        "http://coordinator",
        SigningKey.generate(),
        transport=httpx.MockTransport(coordinator),
        retries=0,
        backoff_s=0,
    )


def test_solver_refuses_an_unrunnable_job_and_still_bids_on_a_good_one(tmp_path):
    coordinator = Coordinator()
    daemon = SolverDaemon(
        client_for(coordinator),
        tmp_path,
        SolverConfig(price=600, stake=400, profiles=[PROFILE], max_jobs=1),
    )
    daemon.step()
    assert ("POST", f"/v1/jobs/{BAD}/bids") not in coordinator.seen
    assert daemon.state.data["jobs"] == {}
    assert daemon.state.data["refused"][BAD].startswith("model.config")

    coordinator.good_listed, coordinator.seen = True, []
    daemon.step()
    assert ("GET", f"/v1/jobs/{BAD}") not in coordinator.seen  # remembered, not rebuilt
    assert ("POST", f"/v1/jobs/{GOOD}/bids") in coordinator.seen  # max_jobs=1 not used up
    assert daemon.state.data["jobs"] == {GOOD: {"state": "bidding"}}


def test_a_restarted_solver_remembers_what_it_refused(tmp_path):
    coordinator = Coordinator()
    config = SolverConfig(price=600, stake=400, profiles=[PROFILE])
    SolverDaemon(client_for(coordinator), tmp_path, config).step()
    coordinator.seen = []
    SolverDaemon(client_for(coordinator), tmp_path, config).step()
    assert ("GET", f"/v1/jobs/{BAD}") not in coordinator.seen


def test_verifier_refuses_to_replay_an_unrunnable_job(tmp_path):
    coordinator = Coordinator()
    daemon = VerifierDaemon(
        client_for(coordinator), tmp_path, VerifierConfig(stake=5, profiles=[PROFILE])
    )
    daemon.step()
    assert daemon.state.data["refused"]["7"].startswith("model.config")
    assert not any(path.startswith("/v1/assignments/7") for _, path in coordinator.seen)
    coordinator.seen = []
    daemon.step()
    assert ("GET", f"/v1/jobs/{BAD}") not in coordinator.seen


def test_solver_that_won_a_job_it_cannot_run_reports_it_instead_of_going_silent(tmp_path):
    """The real training worker refuses the spec; the daemon reports invalid-spec (the
    coordinator then checks the claim) and stops working on the job."""
    coordinator = Coordinator()

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/jobs/{BAD}/invalid-spec":
            coordinator.seen.append((request.method, request.url.path))
            return httpx.Response(200, json={"job_id": BAD, "state": "failed", "log_index": 9})
        return coordinator(request)

    daemon = SolverDaemon(
        client_for(serve), tmp_path, SolverConfig(price=600, stake=400, profiles=[PROFILE])
    )
    daemon.state.data["jobs"][BAD] = {"state": "bidding"}
    won = {**job_view_json(BAD, 1, poisoned_spec()), "state": "awarded"}
    daemon._train_and_commit(parse_response(JobView, won))
    assert ("POST", f"/v1/jobs/{BAD}/invalid-spec") in coordinator.seen
    assert daemon.state.data["jobs"][BAD] == {"state": "failed", "outcome": "invalid_spec"}


def test_a_job_beyond_this_hosts_memory_is_refused_not_bid_on(tmp_path):
    """A hostile submitter's job that fits the protocol but not this host (its state over
    --max-state-mib) is refused before bidding: winning it would mean an OOM and a slash."""
    coordinator = Coordinator()
    coordinator.good_listed = True
    example_state = 1_000  # the good job's state (~84 kB) is larger than this
    daemon = SolverDaemon(
        client_for(coordinator),
        tmp_path,
        SolverConfig(price=600, stake=400, profiles=[PROFILE], max_state_bytes=example_state),
    )
    daemon.step()
    assert ("POST", f"/v1/jobs/{GOOD}/bids") not in coordinator.seen
    assert "--max-state-mib" in daemon.state.data["refused"][GOOD]


def test_the_default_memory_bound_is_a_third_of_the_host_after_a_gibibyte(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        8388608 kB\nMemFree:        1000 kB\n")  # 8 GiB
    assert compute_default_max_state_bytes(meminfo) == (8 - 1) * 2**30 // 3
    meminfo.write_text("MemTotal:       67108864 kB\n")  # 64 GiB: the protocol's limit binds
    assert compute_default_max_state_bytes(meminfo) == MAX_STATE_BYTES
    meminfo.write_text("MemTotal:       1048576 kB\n")  # 1 GiB: nothing left for a state
    assert compute_default_max_state_bytes(meminfo) == 1
    assert compute_default_max_state_bytes(tmp_path / "missing") == MAX_STATE_BYTES
