"""Unsigned, wrongly signed, replayed, stale, oversized and malformed requests get a clear 4xx."""

import dataclasses
import json
import time

import httpx
import pytest
from nacl.signing import SigningKey

from protocol.wire import HEADER_SIGNATURE, HEADER_TIMESTAMP
from sdk.client import compute_signed_headers


def _signed_post(server, key, path, body: bytes, **kwargs) -> tuple[dict, bytes]:
    headers = compute_signed_headers(key, "POST", path, body, **kwargs)
    headers["Content-Type"] = "application/json"
    return headers, body


def _post(server, path, body, headers) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers=headers, timeout=10)


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["code"] == code
    assert problem["detail"]


def test_unsigned_request_is_401(server):
    response = httpx.post(server.url + "/v1/dev/faucet", json={"amount": 5})
    _assert_problem(response, 401, "unauthenticated")


def test_wrong_key_and_tampered_body_are_401(server):
    key, other = SigningKey.generate(), SigningKey.generate()
    headers, body = _signed_post(server, key, "/v1/dev/faucet", b'{"amount": 5}')
    headers["X-Veritrain-Key"] = bytes(other.verify_key).hex()
    _assert_problem(_post(server, "/v1/dev/faucet", body, headers), 401, "unauthenticated")
    headers, _ = _signed_post(server, key, "/v1/dev/faucet", b'{"amount": 5}')
    _assert_problem(
        _post(server, "/v1/dev/faucet", b'{"amount": 9}', headers), 401, "unauthenticated"
    )
    headers[HEADER_SIGNATURE] = "zz"
    _assert_problem(
        _post(server, "/v1/dev/faucet", b'{"amount": 5}', headers), 401, "unauthenticated"
    )


def test_signature_covers_the_path(server, make_client):
    key = SigningKey.generate()
    make_client(key).faucet(100)
    target = bytes(SigningKey.generate().verify_key).hex()
    body = json.dumps({"to": target, "amount": 1}).encode()
    headers, _ = _signed_post(server, key, "/v1/dev/faucet", body)
    _assert_problem(_post(server, "/v1/accounts/transfer", body, headers), 401, "unauthenticated")


def test_replayed_request_is_rejected_and_moves_money_once(server, make_client):
    key = SigningKey.generate()
    client = make_client(key)
    headers, body = _signed_post(server, key, "/v1/dev/faucet", b'{"amount": 7}')
    assert _post(server, "/v1/dev/faucet", body, headers).status_code == 200
    _assert_problem(_post(server, "/v1/dev/faucet", body, headers), 409, "nonce_reused")
    assert client.get_balance() == 7


def test_failed_request_still_burns_its_nonce(server, make_client):
    key = SigningKey.generate()
    client = make_client(key)
    body = json.dumps({"to": bytes(SigningKey.generate().verify_key).hex(), "amount": 5}).encode()
    headers, _ = _signed_post(server, key, "/v1/accounts/transfer", body)
    _assert_problem(
        _post(server, "/v1/accounts/transfer", body, headers), 409, "insufficient_funds"
    )
    client.faucet(10)
    _assert_problem(_post(server, "/v1/accounts/transfer", body, headers), 409, "nonce_reused")
    assert client.get_balance() == 10


@pytest.mark.parametrize("offset", [-1000, 1000])
def test_stale_or_future_timestamp_is_401(server, offset):
    key = SigningKey.generate()
    headers, body = _signed_post(
        server, key, "/v1/dev/faucet", b'{"amount": 5}', timestamp=int(time.time()) + offset
    )
    response = _post(server, "/v1/dev/faucet", body, headers)
    _assert_problem(response, 401, "unauthenticated")
    assert response.json()["field"] == HEADER_TIMESTAMP


def test_oversized_bodies_are_413(server):
    key = SigningKey.generate()
    big = b'{"amount": 5, "pad": "' + b"x" * (server.settings.max_json_body + 10) + b'"}'
    headers, _ = _signed_post(server, key, "/v1/dev/faucet", big)
    _assert_problem(_post(server, "/v1/dev/faucet", big, headers), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit is counted on the stream
        for _ in range(server.settings.max_json_body // 1024 + 2):
            yield b" " * 1024

    response = httpx.post(server.url + "/v1/dev/faucet", content=chunks(), headers=headers)
    _assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"amount": "5"}',
        b'{"amount": -1}',
        b'{"amount": 5, "extra": 1}',
        b"[]",
        b'{"amount": 1.5}',
    ],
)
def test_malformed_bodies_are_422(server, body):
    key = SigningKey.generate()
    headers, _ = _signed_post(server, key, "/v1/dev/faucet", body)
    _assert_problem(_post(server, "/v1/dev/faucet", body, headers), 422, "invalid_input")


def test_idempotency_key_returns_first_response_without_moving_money_twice(server, make_client):
    key = SigningKey.generate()
    client = make_client(key)
    first = client.faucet(11, idempotency_key="faucet-1")
    headers, body = _signed_post(
        server, key, "/v1/dev/faucet", b'{"amount": 11}', idempotency_key="faucet-1"
    )
    replay = _post(server, "/v1/dev/faucet", body, headers)  # fresh nonce, same key
    assert replay.status_code == 200 and replay.json() == dataclasses.asdict(first)
    assert replay.headers["idempotent-replayed"] == "true"
    assert client.get_balance() == 11
    headers, body = _signed_post(
        server, key, "/v1/dev/faucet", b'{"amount": 12}', idempotency_key="faucet-1"
    )
    _assert_problem(_post(server, "/v1/dev/faucet", body, headers), 422, "idempotency_key_reused")


def test_unknown_routes_and_methods_are_problems(server):
    _assert_problem(httpx.get(server.url + "/v1/nope"), 404, "not_found")
    _assert_problem(httpx.delete(server.url + "/v1/info"), 405, "method_not_allowed")
    _assert_problem(httpx.get(server.url + "/v1/log/entries?start=-1"), 422, "invalid_input")
    _assert_problem(
        httpx.get(server.url + "/v1/log/proof/inclusion?index=5&size=3"), 404, "not_found"
    )
