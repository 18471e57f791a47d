"""A real uvicorn server on loopback in a background thread, and per-test databases."""

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from nacl.signing import SigningKey

from coordinator.app import create_app
from coordinator.settings import Settings, tiny_preset
from sdk.client import CoordinatorClient

POSTGRES_ENV = "VERITRAIN_TEST_POSTGRES_URL"


# the referee runs worker processes: a client that waits on rulings allows for a loaded machine
REFEREE_TIMEOUT = httpx.Timeout(120, connect=5)


def get_postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def backend_params(what: str = "PostgreSQL tests") -> list:
    """pytest params: SQLite always; PostgreSQL where .ci/run points at it, else skipped."""
    return [
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    get_postgres_url() is None,
                    reason=f"{what} need {POSTGRES_ENV} (set by .ci/run)",
                ),
            ],
        ),
    ]


@contextmanager
def client_factory(url: str, **defaults) -> Iterator:
    """`make(key=None, **kwargs)`: a client of `url` (a fresh key unless given), every one closed
    on exit; `defaults` (e.g. timeout=REFEREE_TIMEOUT) apply unless overridden."""
    clients: list[CoordinatorClient] = []

    def make(key: SigningKey | None = None, **kwargs) -> CoordinatorClient:
        client = CoordinatorClient(url, key or SigningKey.generate(), **{**defaults, **kwargs})
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema for one test; the URL pins search_path to it. Dropped afterwards."""
    name = "vt_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    base = get_postgres_url()
    if base is None:
        raise RuntimeError(f"{POSTGRES_ENV} is not set")
    with postgres_schema(base) as url:
        yield url


class ServerThread:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.port = _free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("coordinator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def make_settings(url: str, tmp_path: Path, **overrides) -> Settings:
    return tiny_preset(database_url=url, signing_key_file=tmp_path / "coordinator.key", **overrides)


@contextmanager
def running_server(kind: str, tmp_path: Path, **overrides) -> Iterator[ServerThread]:
    with (
        database_url(kind, tmp_path) as url,
        ServerThread(make_settings(url, tmp_path, **overrides)) as server,
    ):
        yield server
