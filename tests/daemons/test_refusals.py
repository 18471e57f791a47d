"""How the daemons take the coordinator's refusals, against an httpx.MockTransport coordinator:
they branch on the problem's code, remember only what the coordinator recorded, skip what a
later round may fix, and re-raise what they do not handle."""

import json

import httpx
import pytest
from nacl.signing import SigningKey

from protocol.presets import example_job_spec_json
from protocol.wire import ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from solver.daemon import SolverConfig, SolverDaemon
from tests.daemons.mock_views import PROFILE, job_view_json
from verifier.daemon import VerifierConfig, VerifierDaemon

JOB_ID = "ab" * 32


def problem(status: int, code: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "type": f"urn:veritrain:problem:{code}",
            "title": code,
            "status": status,
            "detail": "refused",
            "code": code,
        },
    )


def job_json() -> dict:
    return job_view_json(JOB_ID)


def assignment_json(assignment_id: int) -> dict:
    return {
        "id": assignment_id,
        "job_id": JOB_ID,
        "verifier": "ef" * 32,
        "segment": 0,
        "state": "assigned",
        "deadline": 60.0,
    }


class Coordinator:
    """The few routes one daemon round touches; `answers` overrides (method, path) with a response."""

    def __init__(self, answers: dict[tuple[str, str], httpx.Response]):
        self.answers = answers
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        self.seen.append(route)
        if route in self.answers:
            return self.answers[route]
        return self.default(route)

    @staticmethod
    def default(route: tuple[str, str]) -> httpx.Response:
        bodies = {
            ("GET", "/v1/jobs"): {"jobs": [job_json()]},
            ("GET", f"/v1/jobs/{JOB_ID}"): {**job_json(), "spec": example_job_spec_json("mlp")},
            ("POST", f"/v1/jobs/{JOB_ID}/bids"): {
                "job_id": JOB_ID,
                "state": "bidding",
                "log_index": 3,
            },
            ("GET", "/v1/disputes"): {"disputes": []},
            ("POST", "/v1/verifiers"): {"public_key": "ef" * 32, "profiles": [PROFILE], "stake": 5},
            ("GET", "/v1/assignments"): {"assignments": [assignment_json(1), assignment_json(2)]},
            ("GET", f"/v1/jobs/{JOB_ID}/checkpoints/0/info"): {
                "job_id": JOB_ID,
                "index": 0,
                "step": 0,
                "state_root": "11" * 32,
                "sha256": "22" * 32,
                "size": 1,
            },
        }
        if route[0] == "POST" and route[1].startswith("/v1/assignments/"):
            return httpx.Response(
                200, json={**assignment_json(int(route[1].split("/")[3])), "state": "committed"}
            )
        return httpx.Response(200, json=bodies[route])


def client_for(coordinator: Coordinator) -> CoordinatorClient:
    return CoordinatorClient(
        "http://coordinator",
        SigningKey.generate(),
        transport=httpx.MockTransport(coordinator),
        retries=0,
        backoff_s=0,
    )


def solver_after_one_round(tmp_path, bid_answer: httpx.Response | None) -> SolverDaemon:
    answers = {("POST", f"/v1/jobs/{JOB_ID}/bids"): bid_answer} if bid_answer else {}
    daemon = SolverDaemon(
        client_for(Coordinator(answers)),
        tmp_path,
        SolverConfig(price=600, stake=400, profiles=[PROFILE]),
    )
    daemon.step()
    return daemon


def test_an_accepted_bid_is_recorded(tmp_path):
    daemon = solver_after_one_round(tmp_path, None)
    assert daemon.state.data["jobs"] == {JOB_ID: {"state": "bidding"}}


def test_a_bid_already_on_file_is_recorded(tmp_path):
    """A restart that lost its record bids again: the coordinator's 409 already_exists says the
    bid (and its stake) is there, so the job is the daemon's to follow."""
    daemon = solver_after_one_round(tmp_path, problem(409, ProblemCode.ALREADY_EXISTS))
    assert JOB_ID in daemon.state.data["jobs"]


@pytest.mark.parametrize(
    "status, code",
    [
        (409, ProblemCode.INSUFFICIENT_FUNDS),
        (409, ProblemCode.PROFILE_MISMATCH),
        (409, ProblemCode.INVALID_STATE),
        (422, ProblemCode.INVALID_INPUT),
        (503, ProblemCode.WRITE_CONFLICT),
    ],
)
def test_a_declined_bid_is_skipped_this_round(tmp_path, status, code):
    daemon = solver_after_one_round(tmp_path, problem(status, code))
    assert daemon.state.data["jobs"] == {}


@pytest.mark.parametrize(
    "status, code",
    [
        (401, ProblemCode.UNAUTHENTICATED),
        (403, ProblemCode.FORBIDDEN),
        (404, ProblemCode.NOT_FOUND),
        (409, "some_new_code"),
    ],
)
def test_a_refusal_it_does_not_handle_is_raised_and_not_recorded(tmp_path, status, code):
    with pytest.raises(CoordinatorError) as err:
        solver_after_one_round(tmp_path, problem(status, code))
    assert err.value.problem_code == code
    assert json.loads((tmp_path / "state.json").read_text())["jobs"] == {}


def verifier_round(tmp_path, commit_answer: httpx.Response) -> Coordinator:
    """One verifier round over assignments 1 and 2; assignment 1's commit gets `commit_answer`."""
    coordinator = Coordinator({("POST", "/v1/assignments/1/commit"): commit_answer})
    daemon = VerifierDaemon(
        client_for(coordinator),
        tmp_path,
        VerifierConfig(stake=5, profiles=[PROFILE], behaviour="lazy-approve"),
    )
    daemon.step()
    return coordinator


def test_an_assignment_that_moved_on_does_not_hold_up_the_others(tmp_path):
    coordinator = verifier_round(tmp_path, problem(409, ProblemCode.INVALID_STATE))
    assert ("POST", "/v1/assignments/2/commit") in coordinator.seen


@pytest.mark.parametrize(
    "status, code", [(401, ProblemCode.UNAUTHENTICATED), (403, ProblemCode.FORBIDDEN)]
)
def test_a_refused_commit_it_does_not_handle_is_raised(tmp_path, status, code):
    with pytest.raises(CoordinatorError) as err:
        verifier_round(tmp_path, problem(status, code))
    assert err.value.problem_code is code
