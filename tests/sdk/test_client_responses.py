"""The SDK's typed answers, against httpx.MockTransport: bodies become frozen dataclasses with
protocol.wire's enums, problem codes become ProblemCode where known, and a body that is not what
the API promises is an InvalidResponse, never a KeyError deep in a caller."""

import dataclasses
import hashlib

import httpx
import pytest
from nacl.signing import SigningKey

from protocol.wire import AssignmentState, BidStatus, DisputeStatus, JobState, ProblemCode, TreeHead
from sdk.client import CoordinatorClient, CoordinatorError, InvalidResponse
from sdk.responses import BidView, DisputeView, JobView

JOB_ID = "ab" * 32
JOB = {
    "id": 7,
    "job_id": JOB_ID,
    "submitter": "cd" * 32,
    "state": "awarded",
    "profile": "p",
    "bounty": 1000,
    "min_stake": 10,
    "verifier_fee": 5,
    "num_verifiers": 1,
    "num_segments": 1,
    "num_checkpoints": 3,
    "created_at": 1.5,
    "deadline": 9.0,
    "solver": "ef" * 32,
    "price": 600,
    "stake": 400,
    "spec": {"seed": 1},
    "bids": [{"bidder": "ef" * 32, "price": 600, "stake": 400, "profile": "p", "status": "won"}],
    "a_field_added_later": True,
}
DISPUTE = {
    "id": 3,
    "job_id": JOB_ID,
    "assignment_id": 2,
    "status": "open",
    "phase": "steps",
    "turn": "solver",
    "deadline": 100,
    "round": 0,
    "segment": 0,
    "state": {"game": {"lo": 0}},
}


def client_answering(routes: dict[str, httpx.Response]) -> CoordinatorClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return routes[request.url.path]

    return CoordinatorClient(
        "http://c",
        SigningKey.generate(),
        transport=httpx.MockTransport(handler),
        retries=0,
        backoff_s=0,
    )


def test_a_job_is_a_frozen_dataclass_with_enum_states():
    job = client_answering({f"/v1/jobs/{JOB_ID}": httpx.Response(200, json=JOB)}).get_job(JOB_ID)
    assert isinstance(job, JobView) and job.state is JobState.AWARDED
    assert job.bids == (BidView("ef" * 32, 600, 400, "p", BidStatus.WON),)
    assert job.spec == {"seed": 1} and job.trajectory_root is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = JobState.SETTLED  # type: ignore[misc]


def test_pages_become_lists_of_views():
    client = client_answering(
        {
            "/v1/jobs": httpx.Response(200, json={"jobs": [JOB]}),
            "/v1/disputes": httpx.Response(200, json={"disputes": [DISPUTE]}),
            "/v1/assignments": httpx.Response(
                200,
                json={
                    "assignments": [
                        {
                            "id": 1,
                            "job_id": JOB_ID,
                            "verifier": "ef" * 32,
                            "segment": 0,
                            "state": "revealable",
                            "deadline": 5.0,
                        }
                    ]
                },
            ),
        }
    )
    assert [j.job_id for j in client.list_jobs(state=JobState.BIDDING)] == [JOB_ID]
    [dispute] = client.list_disputes()
    assert isinstance(dispute, DisputeView) and dispute.status is DisputeStatus.OPEN
    assert dispute.game_json == {"lo": 0} and dispute.dispute_step is None
    assert client.get_assignments()[0].state is AssignmentState.REVEALABLE


def test_the_tree_head_and_proofs_are_bytes():
    head = {
        "size": 2,
        "timestamp_ms": 5,
        "root": "01" * 32,
        "signature": "02" * 64,
        "public_key": "03" * 32,
    }
    client = client_answering(
        {
            "/v1/log/head": httpx.Response(200, json=head),
            "/v1/log/proof/inclusion": httpx.Response(200, json={"proof": ["04" * 32]}),
        }
    )
    assert client.get_tree_head() == TreeHead(2, 5, b"\x01" * 32, b"\x02" * 64, b"\x03" * 32)
    assert client.get_inclusion_proof(0, 2) == [b"\x04" * 32]


@pytest.mark.parametrize(
    "body",
    [
        {**JOB, "state": "on_holiday"},  # a state the protocol does not have
        {k: v for k, v in JOB.items() if k != "submitter"},
        {**JOB, "bounty": "lots"},
        ["not", "an", "object"],
    ],
)
def test_a_body_that_breaks_the_schema_is_an_invalid_response(body):
    client = client_answering({f"/v1/jobs/{JOB_ID}": httpx.Response(200, json=body)})
    with pytest.raises(InvalidResponse) as err:
        client.get_job(JOB_ID)
    assert err.value.status == 502 and isinstance(err.value, CoordinatorError)


def test_bad_hex_bodies_and_non_json_are_invalid_responses():
    client = client_answering(
        {
            "/v1/log/head": httpx.Response(
                200,
                json={
                    "size": 1,
                    "timestamp_ms": 1,
                    "root": "zz",
                    "signature": "",
                    "public_key": "",
                },
            ),
            "/v1/info": httpx.Response(200, text="<html>a proxy's error page</html>"),
            "/v1/jobs": httpx.Response(200, json={"no_jobs_key": []}),
        }
    )
    for call in (client.get_tree_head, client.get_info, client.list_jobs):
        with pytest.raises(InvalidResponse):
            call()


def test_dataset_bytes_that_do_not_match_their_address_are_an_invalid_response():
    sha256 = hashlib.sha256(b"expected").hexdigest()
    client = client_answering(
        {f"/v1/datasets/{sha256}": httpx.Response(200, content=b"something else")}
    )
    with pytest.raises(InvalidResponse):
        client.download_dataset(sha256)


@pytest.mark.parametrize(
    "code, expected",
    [
        ("already_exists", ProblemCode.ALREADY_EXISTS),
        ("write_conflict", ProblemCode.WRITE_CONFLICT),
        ("a_code_from_a_newer_server", "a_code_from_a_newer_server"),
    ],
)
def test_problem_codes_are_typed_when_known(code, expected):
    client = client_answering(
        {
            f"/v1/jobs/{JOB_ID}/bids": httpx.Response(
                409, json={"code": code, "status": 409, "detail": "no"}
            )
        }
    )
    with pytest.raises(CoordinatorError) as err:
        client.bid(JOB_ID, 1, 1, "p")
    assert err.value.status == 409 and err.value.problem_code == expected
    assert type(err.value.problem_code) is type(expected)
    assert err.value.problem["detail"] == "no"


def test_a_problem_without_a_code_says_unknown():
    client = client_answering({"/v1/info": httpx.Response(500, text="gateway exploded")})
    with pytest.raises(CoordinatorError) as err:
        client.get_info()
    assert err.value.problem_code == "unknown" and err.value.problem == {
        "detail": "gateway exploded"
    }
