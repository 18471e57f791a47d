import pytest

from tests.coordinator.server import backend_params, client_factory, running_server


@pytest.fixture(params=backend_params())
def backend(request) -> str:
    return request.param


@pytest.fixture
def server(backend, tmp_path):
    with running_server(backend, tmp_path) as srv:
        yield srv


@pytest.fixture
def make_client(server):
    with client_factory(server.url) as make:
        yield make
