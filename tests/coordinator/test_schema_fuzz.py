"""schemathesis against the served OpenAPI schema, with every check it has (`--checks all`), on
SQLite and on PostgreSQL: no 5xx, no undocumented status, content type, header or response shape,
invalid data refused, valid data not refused for its shape, 405 with `Allow` for an unlisted
method. Requests are signed by a funded account so mutations get past the signature check into
validation and the domain; bounded to a few examples per operation."""

import secrets

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from nacl.signing import SigningKey
from schemathesis.config import OperationConfig

from protocol.wire import HEADER_IDEMPOTENCY
from sdk.client import CoordinatorClient, compute_signed_headers
from tests.coordinator.server import backend_params, running_server

KEY = SigningKey.generate()
HTTP = httpx.Client(timeout=30)  # one client: creating one per request costs ~50 ms
BACKENDS = backend_params("the PostgreSQL schema fuzz")

# positive_data_acceptance: a schema-valid body is not refused for its shape. These operations
# take bodies whose validity no JSON Schema can state, refused with their documented 422; there,
# and only there, 422 is an expected answer to schema-valid data.
BEYOND_THE_SCHEMA = {
    ("POST", "/v1/accounts/transfer"): "`to` must be a key someone can sign for (a curve point)",
    ("POST", "/v1/jobs"): "the spec must be a runnable job spec (protocol.spec), not any object",
    ("POST", "/v1/verifiers"): "the standing stake must reach the bond, a server setting",
    ("PUT", "/v1/datasets/{sha256}"): "the body must hash to its address and be a dataset file",
}
POSITIVE_EXPECTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]  # default + 422


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(request, tmp_path_factory):
    with running_server(
        request.param,
        tmp_path_factory.mktemp("fuzz"),
        max_checkpoint_body=64 * 1024,
        rate_limit_per_s=0,  # one key sends every request: the cases must reach the routes
    ) as server:
        with CoordinatorClient(server.url, KEY) as client:
            client.faucet(10**9)
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    loaded = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    # bounded: the deterministic coverage cases (boundaries, missing parameters, an unlisted
    # method) plus ~10 generated cases per operation
    loaded.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    loaded.config.checks.update(included_check_names=["all"])
    for method, path in BEYOND_THE_SCHEMA:
        loaded.config.operations.operations.append(
            OperationConfig.from_dict(
                {
                    "include-method": method,
                    "include-path": path,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": POSITIVE_EXPECTED}
                    },
                }
            )
        )
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
        # An Idempotency-Key names one request: a generated one, reused across different
        # requests, is rightly refused (422 idempotency_key_reused). Send a fresh one, signed.
        idempotency_key = ""
        if HEADER_IDEMPOTENCY in request.headers:
            idempotency_key = request.headers[HEADER_IDEMPOTENCY] = secrets.token_hex(16)
        request.headers.update(
            compute_signed_headers(
                KEY,
                request.method,
                request.url.raw_path.decode(),
                request.read(),
                idempotency_key=idempotency_key,
            )
        )
    return HTTP.send(request)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, fuzz_server):
    response = _send_signed(case, fuzz_server.url)
    case.validate_response(response)  # every check enabled above: `--checks all`
