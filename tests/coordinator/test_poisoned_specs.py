"""A hostile submitter cannot post a job nobody can run: every spec the worker would refuse to
build (`protocol.training.check_runnable_spec`) is refused at submission with 422 invalid_spec
naming the field, through a real server. And a job stored before today's rules (inserted
directly) still reads back: GET /v1/jobs/{id} answers its stored spec, never a 500."""

import copy
import json
import secrets

import httpx
import pytest

from coordinator.models import Job
from protocol.wire import JobState
from sdk.client import CoordinatorError
from tests.coordinator.market import funded, tiny_spec_json


def _poisoned(edit) -> dict:
    spec = copy.deepcopy(tiny_spec_json())
    edit(spec)
    return spec


POISONED = {
    "unknown model.config key": (
        lambda s: s["model"]["config"].update(width=4),
        "model.config.width",
    ),
    "hidden list with huge sizes": (
        lambda s: s["model"]["config"].update(hidden=[8192] * 8),
        "model.config",
    ),
    "gpt with absurd width": (
        lambda s: s.update(
            model={"name": "gpt-tiny", "config": {"d_model": 4096, "layers": 48, "heads": 64}},
            dataset={"kind": "text", "config": {"context": 32}},
        ),
        "model.config",
    ),
    "synthetic dataset too large to generate": (
        lambda s: s["dataset"]["config"].update(examples=1_000_000, input_shape=[4096, 4096]),
        "dataset.config",
    ),
    "steps too large": (lambda s: s.update(steps=10**9), "steps"),
    "batch too large": (lambda s: s.update(batch_size=10**6), "batch_size"),
    "200 KB torch_version": (
        lambda s: s["profile"].update(torch_version="2." * 100_000),
        "profile.torch_version",
    ),
    "torch_version with a label separator": (
        lambda s: s["profile"].update(torch_version="2.13.0:float64"),
        "profile.torch_version",
    ),
    "model that does not fit its dataset": (
        lambda s: s.update(model={"name": "gpt-tiny", "config": {}}),
        "dataset.kind",
    ),
}


@pytest.mark.parametrize("name", sorted(POISONED))
def test_a_poisoned_spec_is_refused_at_submission(server, make_client, name):
    edit, field = POISONED[name]
    submitter = funded(make_client)
    with pytest.raises(CoordinatorError) as err:
        submitter.submit_job(_poisoned(edit), bounty=100)
    assert err.value.status == 422, err.value.problem
    assert err.value.problem["code"] == "invalid_spec", err.value.problem
    assert err.value.problem.get("field", "").startswith(field), err.value.problem
    assert submitter.get_balance() == 10_000  # nothing moved to an escrow


def test_the_tiny_spec_is_still_accepted(server, make_client):
    assert funded(make_client).submit_job(tiny_spec_json(), bounty=100).state is JobState.BIDDING


def insert_job(server, spec_json: str) -> str:
    """A job stored before today's validation, straight into the database."""
    rt = server.app.state.runtime
    job_id = secrets.token_hex(32)

    def add(session) -> None:
        session.add(
            Job(
                job_id=job_id,
                submitter=secrets.token_hex(32),
                spec_json=spec_json,
                profile_label="pinned:torch-2.13.0:float32:t1:avx2",
                bounty=100,
                min_stake=0,
                verifier_fee=0,
                num_verifiers=0,
                num_segments=1,
                num_checkpoints=2,
                state=JobState.BIDDING,
                created_at=rt.clock.now(),
                bidding_deadline=rt.clock.now() + 600,
                deadline=rt.clock.now() + 600,
            )
        )

    rt.db.write(add)
    return job_id


STORED = {
    "unknown config key": json.dumps(_poisoned(lambda s: s["model"]["config"].update(width=4))),
    "non-finite value": json.dumps(
        _poisoned(lambda s: s["model"]["config"].update(x=float("nan")))
    ),
    "not an object": "[1, 2]",
    "not JSON": "{not json",
}


@pytest.mark.parametrize("name", sorted(STORED))
def test_get_job_answers_a_stored_spec_that_fails_validation(server, name):
    job_id = insert_job(server, STORED[name])
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job_id
    listed = httpx.get(f"{server.url}/v1/jobs", params={"state": "bidding"})
    assert listed.status_code == 200, listed.text
