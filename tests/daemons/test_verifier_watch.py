"""Watch mode of the verifier daemon against a MockTransport coordinator: it challenges segments
of verifying jobs of its profiles within its hourly budget, never of a job it solves or
submitted, never a segment it already holds, and remembers what it challenged across a
restart."""

import httpx
from nacl.signing import SigningKey

from protocol.presets import example_job_spec_json
from sdk.client import CoordinatorClient
from tests.daemons.mock_views import PROFILE, job_view_json
from tests.daemons.test_solver_refuses_unrunnable import poisoned_spec
from verifier.daemon import VerifierConfig, VerifierDaemon

OWN_SOLVED, OWN_SUBMITTED, OTHER = "a1" * 32, "a2" * 32, "a3" * 32
OTHERS = "cd" * 32
SEGMENTS = 4  # OTHER has 5 checkpoints


class Coordinator:
    def __init__(self, me: str, poisoned: bool = False):
        self.me, self.poisoned = me, poisoned
        self.challenges: list[tuple[str, int]] = []
        self.assignments: list[dict] = []

    def _job(self, job_id: str, row: int, solver: str, submitter: str, spec=None) -> dict:
        view = job_view_json(job_id, row, spec)
        return {
            **view,
            "state": "verifying",
            "solver": solver,
            "submitter": submitter,
            "num_checkpoints": SEGMENTS + 1,
        }

    def jobs(self, spec=None) -> dict[str, dict]:
        return {
            OWN_SOLVED: self._job(OWN_SOLVED, 1, self.me, OTHERS, spec),
            OWN_SUBMITTED: self._job(OWN_SUBMITTED, 2, OTHERS, self.me, spec),
            OTHER: self._job(OTHER, 3, "ef" * 32, OTHERS, spec),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if (method, path) == ("GET", "/v1/jobs"):
            assert request.url.params["state"] == "verifying"
            assert request.url.params["profile"] == PROFILE
            after = int(request.url.params.get("after", 0))
            return httpx.Response(
                200, json={"jobs": [j for j in self.jobs().values() if j["id"] > after]}
            )
        if method == "GET" and path.startswith("/v1/jobs/"):
            job_id = path.rsplit("/", 1)[1]
            spec = poisoned_spec() if self.poisoned else example_job_spec_json("mlp")
            return httpx.Response(200, json=self.jobs(spec)[job_id])
        if method == "POST" and path.endswith("/challenges"):
            job_id = path.split("/")[3]
            segment = httpx.Response(200, content=request.content).json()["segment"]
            self.challenges.append((job_id, segment))
            view = {
                "id": len(self.challenges),
                "job_id": job_id,
                "verifier": self.me,
                "segment": segment,
                "state": "awaiting_start",  # the solver owes checkpoint `segment` first
                "deadline": 60.0,
                "volunteer": True,
            }
            self.assignments.append(view)
            return httpx.Response(200, json=view)
        bodies = {
            ("GET", "/v1/assignments"): {"assignments": self.assignments},
            ("GET", "/v1/disputes"): {"disputes": []},
            ("POST", "/v1/verifiers"): {"public_key": self.me, "profiles": [PROFILE], "stake": 5},
        }
        return httpx.Response(200, json=bodies[(method, path)])


def _daemon(coordinator: Coordinator, key: SigningKey, store, budget: int) -> VerifierDaemon:
    client = CoordinatorClient(
        "http://coordinator",
        key,
        transport=httpx.MockTransport(coordinator),
        retries=0,
        backoff_s=0,
    )
    config = VerifierConfig(stake=5, profiles=[PROFILE], watch_budget=budget)
    return VerifierDaemon(client, store, config)


def test_watch_mode_challenges_within_budget_and_never_its_own_jobs(tmp_path):
    key = SigningKey.generate()
    coordinator = Coordinator(key.verify_key.encode().hex())
    daemon = _daemon(coordinator, key, tmp_path, budget=3)
    now = [1_000_000.0]
    daemon.clock = lambda: now[0]
    daemon.step()
    assert len(coordinator.challenges) == 3  # the hour's budget
    assert {job for job, _ in coordinator.challenges} == {OTHER}
    segments = [s for _, s in coordinator.challenges]
    assert len(set(segments)) == 3 and set(segments) <= set(range(SEGMENTS))
    daemon.step()
    assert len(coordinator.challenges) == 3  # spent until the hour has passed

    restarted = _daemon(coordinator, key, tmp_path, budget=3)
    restarted.clock = lambda: now[0] + 3601
    coordinator.assignments = []  # even unlisted, what it challenged is remembered
    restarted.step()
    assert len(coordinator.challenges) == 4  # only one segment was left
    assert sorted(s for _, s in coordinator.challenges) == list(range(SEGMENTS))
    restarted.step()
    assert len(coordinator.challenges) == 4


def test_watch_mode_is_off_by_default(tmp_path):
    key = SigningKey.generate()
    coordinator = Coordinator(key.verify_key.encode().hex())
    _daemon(coordinator, key, tmp_path, budget=0).step()
    assert coordinator.challenges == []


def test_watch_mode_runs_the_spec_validator_before_it_challenges(tmp_path):
    key = SigningKey.generate()
    coordinator = Coordinator(key.verify_key.encode().hex(), poisoned=True)
    daemon = _daemon(coordinator, key, tmp_path, budget=3)
    daemon.step()
    assert coordinator.challenges == []
    assert daemon.state.data["refused"][OTHER].startswith("model.config")
    daemon.step()  # remembered: not rebuilt, not challenged
    assert coordinator.challenges == []
