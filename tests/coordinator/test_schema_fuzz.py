"""schemathesis against the served OpenAPI schema: no 5xx, no undocumented status, content type
or response shape. Requests are signed by a funded account so mutations get past the signature
check into validation and the domain; bounded to a few examples per operation."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from nacl.signing import SigningKey
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from sdk.client import CoordinatorClient, compute_signed_headers
from tests.coordinator.server import running_server

KEY = SigningKey.generate()
HTTP = httpx.Client(timeout=30)  # one client: creating one per request costs ~50 ms
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with running_server(
        "sqlite", tmp_path_factory.mktemp("fuzz"), max_checkpoint_body=64 * 1024
    ) as server:
        with CoordinatorClient(server.url, KEY) as client:
            client.faucet(10**9)
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    loaded = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    loaded.config.phases.update(phases=["examples", "fuzzing"])  # bounded: ~10 cases per operation
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


def _send_signed(case, base_url: str) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    request = httpx.Request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        content=kwargs.get("data") if isinstance(kwargs.get("data"), bytes) else None,
    )
    if request.method != "GET":
        body = request.read()
        request.headers.update(
            compute_signed_headers(KEY, request.method, request.url.raw_path.decode(), body)
        )
    return HTTP.send(request)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, fuzz_server):
    response = _send_signed(case, fuzz_server.url)
    case.validate_response(response, checks=CHECKS)
