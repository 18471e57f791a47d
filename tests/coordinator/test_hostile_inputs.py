"""Hostile inputs that used to reach a 500 (or a wrong answer) get a clear typed 4xx instead.

Each test sends the raw request a hostile submitter or outsider could send, to a real server.
"""

import hashlib
import json
from types import SimpleNamespace

import httpx
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from nacl.signing import SigningKey
from safetensors.torch import save as safetensors_save

from coordinator.disputes import service as dispute_service
from coordinator.errors import Forbidden
from coordinator.problems import install_problem_handlers
from protocol.dispute import IllegalMove, Move
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import HEADER_TIMESTAMP
from sdk.client import compute_signed_headers
from tests.coordinator.market import funded, tiny_spec_json

OUTSIDER = SigningKey(b"\x07" * 32)


def _send(server, key, method, path, body: bytes, content_type="application/json", **kwargs):
    headers = compute_signed_headers(key, method, path, body, **kwargs)
    headers["Content-Type"] = content_type
    return headers, lambda h=headers: httpx.request(
        method, server.url + path, content=body, headers=h, timeout=30
    )


def _assert_problem(response: httpx.Response, status: int, code: str, field: str | None = None):
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["code"] == code, problem
    if field is not None:
        assert problem.get("field", "").startswith(field), problem


def _assert_fails_then_replay_is_409(send, status: int, code: str, field: str | None = None):
    """A failed request still burns its nonce: sending it again is a replay."""
    _assert_problem(send(), status, code, field)
    _assert_problem(send(), 409, "nonce_reused")


# 6 -------------------------------------------------------------------------------------------


def test_superscript_digit_timestamp_is_401(server):
    headers, _ = _send(server, OUTSIDER, "POST", "/v1/dev/faucet", b'{"amount": 5}')
    headers[HEADER_TIMESTAMP] = "¹²³".encode("latin-1")  # str.isdigit() says yes, int() says no
    response = httpx.post(
        server.url + "/v1/dev/faucet", content=b'{"amount": 5}', headers=headers, timeout=10
    )
    _assert_problem(response, 401, "unauthenticated", HEADER_TIMESTAMP)


# 7 -------------------------------------------------------------------------------------------


def _post_job(server, key, spec_text: str):
    body = f'{{"spec": {spec_text}, "bounty": 10}}'.encode()
    return _send(server, key, "POST", "/v1/jobs", body)[1]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_spec_config_is_invalid_spec(server, value):
    spec = json.dumps(tiny_spec_json()).replace('"dropout": 0.0', f'"dropout": 0.0, "x": {value}')
    send = _post_job(server, OUTSIDER, spec)
    _assert_problem(send(), 422, "invalid_spec", "model.config.x")


def test_deeply_nested_spec_config_is_invalid_spec(server):
    spec = json.dumps(tiny_spec_json()).replace(
        '"input_shape": [32]', '"input_shape": ' + "[" * 700 + "]" * 700
    )
    send = _post_job(server, OUTSIDER, spec)
    _assert_problem(send(), 422, "invalid_spec", "dataset.config.input_shape")


# 8 -------------------------------------------------------------------------------------------


def _state_bytes(name: str, tensor: torch.Tensor) -> bytes:
    return safetensors_save({"step": torch.tensor(0, dtype=torch.int64), name: tensor})


def _put_checkpoint(server, key, job_id: str, data: bytes):
    path = f"/v1/jobs/{job_id}/checkpoints/0?step=0"
    return _send(server, key, "PUT", path, data, "application/octet-stream")[1]


@pytest.fixture
def posted_job(server, make_client) -> str:
    spec = tiny_spec_json()
    funded(make_client).submit_job(spec, 100)
    return compute_job_id(parse_job_spec(spec)).hex()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_state_bytes("param/" + "w" * 70_000, torch.zeros(1)), id="long-name"),
        pytest.param(_state_bytes("param/w", torch.zeros([1] * 300)), id="300-dims"),
    ],
)
def test_checkpoint_that_cannot_be_hashed_is_corrupt_and_burns_its_nonce(server, posted_job, data):
    send = _put_checkpoint(server, SigningKey.generate(), posted_job, data)
    _assert_fails_then_replay_is_409(send, 422, "checkpoint_corrupt")


def test_checkpoint_for_no_job_is_404_without_decoding(server):
    garbage = _state_bytes("param/" + "w" * 70_000, torch.zeros(1))
    send = _put_checkpoint(server, OUTSIDER, "ab" * 32, garbage)
    _assert_fails_then_replay_is_409(send, 404, "not_found")


# 9 and 13 (dataset) ----------------------------------------------------------------------------


def test_dataset_with_scalar_targets_is_invalid_and_burns_its_nonce(server):
    data = safetensors_save({"inputs": torch.zeros(2, 3), "targets": torch.tensor(1)})
    path = f"/v1/datasets/{hashlib.sha256(data).hexdigest()}"
    send = _send(server, OUTSIDER, "PUT", path, data, "application/octet-stream")[1]
    _assert_fails_then_replay_is_409(send, 422, "invalid_spec", "dataset")


# 10 ------------------------------------------------------------------------------------------


def test_odd_length_hex_salt_is_refused_by_validation(server):
    body = json.dumps({"root": "00" * 32, "salt": "abc"}).encode()
    send = _send(server, OUTSIDER, "POST", "/v1/assignments/1/reveal", body)[1]
    _assert_problem(send(), 422, "invalid_input", "salt")


# 11 ------------------------------------------------------------------------------------------

HUGE_ROUND_MOVE = b'{"move": {"party": "solver", "kind": "dissect", "round": 1e400, ' + (
    b'"payload": {}, "signature": ""}}'
)


def test_dispute_move_with_a_huge_round_is_not_a_500(server):
    send = _send(server, OUTSIDER, "POST", "/v1/disputes/1/moves", HUGE_ROUND_MOVE)[1]
    _assert_problem(send(), 404, "not_found")


@pytest.mark.parametrize("bad_round", [float("inf"), 1e400, True, 1.5, 2**100, -1, "1"])
def test_move_from_json_refuses_anything_but_a_sane_integer_round(bad_round):
    move = {"party": "solver", "kind": "dissect", "round": bad_round, "payload": {}}
    with pytest.raises(IllegalMove):
        Move.from_json({**move, "signature": ""})


def test_an_outsiders_move_is_refused_before_it_is_parsed(monkeypatch):
    game = SimpleNamespace(solver_key="aa" * 32, verifier_key="bb" * 32)
    monkeypatch.setattr(dispute_service, "lock_dispute", lambda _s, _id: (None, None))
    monkeypatch.setattr(dispute_service, "get_game", lambda _d: game)
    move = json.loads(HUGE_ROUND_MOVE)["move"]
    with pytest.raises(Forbidden):
        dispute_service.process_dispute_move(None, None, "cc" * 32, 1, move)


def test_move_request_with_unknown_fields_is_422(server):
    body = json.dumps({"move": {}, "extra": 1}).encode()
    send = _send(server, OUTSIDER, "POST", "/v1/disputes/1/moves", body)[1]
    _assert_problem(send(), 422, "invalid_input", "extra")


# 13 ------------------------------------------------------------------------------------------


def test_dispute_state_for_no_dispute_burns_its_nonce(server):
    send = _send(
        server, OUTSIDER, "PUT", "/v1/disputes/1/state", b"junk", "application/octet-stream"
    )
    _assert_fails_then_replay_is_409(send[1], 404, "not_found")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("00" * 32, id="all-zero"),
        pytest.param("01" + "00" * 31, id="identity-point"),
        pytest.param("ff" * 32, id="not-a-point"),
    ],
)
def test_transfer_to_a_key_nobody_can_sign_for_is_422(server, make_client, target):
    key = SigningKey.generate()
    make_client(key).faucet(10)
    body = json.dumps({"to": target, "amount": 1}).encode()
    send = _send(server, key, "POST", "/v1/accounts/transfer", body)[1]
    _assert_problem(send(), 422, "invalid_input", "to")
    assert make_client(key).get_balance() == 10


def test_405_carries_allow(server):
    response = httpx.delete(server.url + "/v1/info")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("inclusion?index=5&size=1", 404),
        ("consistency?old=2&new=1", 404),
    ],
)
def test_log_proofs_in_the_schema_range_are_never_422(server, make_client, query, status):
    make_client().faucet(1)  # a log of size 1
    response = httpx.get(server.url + "/v1/log/proof/" + query)
    _assert_problem(response, status, "not_found")


def test_a_500_says_connection_close():
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
