"""The SDK client, against httpx.MockTransport: signing, retries that reuse the idempotency key,
problem responses as typed errors, and no server imports."""

import json
import subprocess
import sys

import httpx
import pytest
from nacl.signing import SigningKey

from protocol.signing import DOMAIN_REQUEST, is_valid_signature
from protocol.wire import (
    HEADER_IDEMPOTENCY,
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ProblemCode,
    compute_request_message,
)
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.responses import MovementView


def _is_validly_signed(request: httpx.Request) -> bool:
    h = request.headers
    message = compute_request_message(
        request.method,
        request.url.raw_path.decode(),
        request.content,
        int(h[HEADER_TIMESTAMP]),
        h[HEADER_NONCE],
        h.get(HEADER_IDEMPOTENCY, ""),
    )
    return is_valid_signature(
        bytes.fromhex(h[HEADER_KEY]), DOMAIN_REQUEST, message, bytes.fromhex(h[HEADER_SIGNATURE])
    )


def test_retries_reuse_the_idempotency_key_with_fresh_nonces():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503, json={"code": "write_conflict", "status": 503})
        return httpx.Response(200, json={"log_index": 4, "available": 9})

    client = CoordinatorClient(
        "http://coordinator",
        SigningKey.generate(),
        transport=httpx.MockTransport(handler),
        backoff_s=0,
    )
    assert client.transfer("ab" * 32, 5) == MovementView(log_index=4, available=9)
    assert len(seen) == 3
    assert len({r.headers[HEADER_IDEMPOTENCY] for r in seen}) == 1
    assert len({r.headers[HEADER_NONCE] for r in seen}) == 3
    assert all(_is_validly_signed(r) for r in seen)
    assert json.loads(seen[0].content) == {"to": "ab" * 32, "amount": 5}


def test_problem_responses_raise_typed_errors_without_retrying_4xx():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            409, json={"code": "insufficient_funds", "status": 409, "detail": "no"}
        )

    client = CoordinatorClient(
        "http://c", SigningKey.generate(), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(CoordinatorError) as err:
        client.transfer("ab" * 32, 5)
    assert err.value.status == 409 and err.value.problem_code is ProblemCode.INSUFFICIENT_FUNDS
    assert len(calls) == 1


def test_transport_errors_are_retried_then_raised():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    client = CoordinatorClient(
        "http://c",
        SigningKey.generate(),
        transport=httpx.MockTransport(handler),
        retries=2,
        backoff_s=0,
    )
    with pytest.raises(httpx.ConnectError):
        client.heartbeat("00" * 32)
    assert len(calls) == 3


def test_reads_are_unsigned_and_query_strings_are_signed_when_mutating():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "job_id": "x",
                "index": 0,
                "step": 0,
                "state_root": "r",
                "sha256": "s",
                "size": 1,
                "entries": [],
            },
        )

    client = CoordinatorClient(
        "http://c", SigningKey.generate(), transport=httpx.MockTransport(handler)
    )
    client.get_log_entries(0)
    client.upload_checkpoint("00" * 32, 1, 1, b"bytes", [b"\x01" * 32])
    assert HEADER_SIGNATURE not in seen[0].headers
    assert b"?" in seen[1].url.raw_path and _is_validly_signed(seen[1])


def test_client_imports_no_server_code():
    code = (
        "import sys, sdk.client; bad = [m for m in ('fastapi', 'sqlalchemy', 'coordinator', 'uvicorn') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
