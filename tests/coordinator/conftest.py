import pytest
from nacl.signing import SigningKey

from sdk.client import CoordinatorClient
from tests.coordinator.server import POSTGRES_ENV, get_postgres_url, running_server

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(
                get_postgres_url() is None,
                reason=f"PostgreSQL tests need {POSTGRES_ENV} (set by .ci/run)",
            ),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def server(backend, tmp_path):
    with running_server(backend, tmp_path) as srv:
        yield srv


@pytest.fixture
def make_client(server):
    clients: list[CoordinatorClient] = []

    def make(key: SigningKey | None = None, **kwargs) -> CoordinatorClient:
        client = CoordinatorClient(
            server.url, key if key is not None else SigningKey.generate(), **kwargs
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
