"""A submitter buys assurance by name or by detection target; the coordinator derives how many
segments and verifiers to sample and logs what that buys (survival of a one-step deviation) and
costs (verification compute) with the submission."""

import json

import pytest

from protocol.wire import ProblemCode
from sdk.client import CoordinatorError
from tests.coordinator.market import funded, tiny_spec_json

SPEC = {**tiny_spec_json(seed=31), "steps": 8}  # 8 segments


def _submitted_entry(client) -> dict:
    size = client.get_tree_head().size
    return json.loads(client.get_log_entries(size - 1, 1)[0].body)["data"]


@pytest.mark.parametrize(
    ("kwargs", "segments", "verifiers", "survival"),
    [
        ({"assurance": "high"}, 4, 2, 0.5),
        ({"assurance": "full"}, 8, 2, 0.0),
        ({"detection": 0.3}, 3, 1, 0.625),
        ({}, 1, 1, 0.875),  # explicit counts (the defaults): what they amount to is logged too
    ],
)
def test_assurance_sets_the_sampling_and_the_log_says_what_it_buys(
    make_client, kwargs, segments, verifiers, survival
):
    submitter = funded(make_client)
    job_id = submitter.submit_job(SPEC, 1000, **kwargs).job_id
    job = submitter.get_job(job_id)
    assert (job.num_segments, job.num_verifiers) == (segments, verifiers)
    data = _submitted_entry(submitter)
    assert data["single_step_survival"] == survival
    assert data["verification_fraction"] == verifiers * segments / 8
    assert data["assurance"] == kwargs.get("assurance")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"assurance": "paranoid"}, "assurance"),
        ({"assurance": "high", "detection": 0.5}, "assurance"),
        ({"detection": 1.5}, "detection"),
    ],
)
def test_unknown_or_contradictory_assurance_is_422_naming_the_field(make_client, kwargs, field):
    submitter = funded(make_client)
    with pytest.raises(CoordinatorError) as refused:
        submitter.submit_job(SPEC, 1000, **kwargs)
    assert refused.value.status == 422
    assert refused.value.problem.get("field") == field
    assert refused.value.problem_code == ProblemCode.INVALID_INPUT
    assert submitter.get_balance() == 10_000


def test_cli_submit_buys_a_level_and_shows_what_it_costs(server, tmp_path):
    """`veritrain job submit --assurance high` in a real subprocess against a real server."""
    import subprocess
    import sys

    from sdk.client import CoordinatorClient
    from sdk.keys import create_key_file

    key_path = tmp_path / "submitter.key"
    with CoordinatorClient(server.url, create_key_file(key_path)) as client:
        client.faucet(10_000)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "job", "submit", str(spec_path), "--bounty", "1000"]
        + ["--assurance", "high", "--coordinator", server.url, "--key", str(key_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 verifier(s) × 4 of 8 segments = 100% of the training compute" in done.stderr
    assert "survives with probability 0.50" in done.stderr
