"""A real uvicorn server on loopback in a background thread, and per-test databases; and
`veritrain coordinator serve --workers N` as a real subprocess of N replicas on PostgreSQL."""

import os
import signal
import socket
import subprocess
import sys
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
REPLICAS = "postgres-4-replicas"  # a `running_server` kind: 4 replica processes on PostgreSQL
REPLICA_COUNT = 4
ROOT = Path(__file__).resolve().parents[2]


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
    overrides.setdefault("blob_dir", tmp_path / "blobs")  # never the working directory
    return tiny_preset(database_url=url, signing_key_file=tmp_path / "coordinator.key", **overrides)


@contextmanager
def running_server(kind: str, tmp_path: Path, **overrides) -> Iterator[ServerThread]:
    if kind == REPLICAS:
        with (
            database_url("postgres", tmp_path) as url,
            ReplicaServer(make_settings(url, tmp_path, **overrides), REPLICA_COUNT) as server,
        ):
            yield server
        return
    with (
        database_url(kind, tmp_path) as url,
        ServerThread(make_settings(url, tmp_path, **overrides)) as server,
    ):
        yield server


def replica_params() -> list:
    """The pytest param of a `backend` fixture that adds 4 replica processes on PostgreSQL."""
    return [
        pytest.param(
            REPLICAS,
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    get_postgres_url() is None,
                    reason=f"replicas share a PostgreSQL database: need {POSTGRES_ENV}",
                ),
            ],
        )
    ]


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as the VERITRAIN_ environment a `coordinator serve` process reads."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None or name == "signing_key_hex":
            continue
        env[f"VERITRAIN_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


class ReplicaServer:
    """`veritrain coordinator serve --workers N` in a subprocess (its own process group), with
    `settings` passed through the environment as in production; its log is `serve.log`."""

    def __init__(self, settings: Settings, workers: int, log_dir: Path | None = None):
        self.settings, self.workers = settings, workers
        self.port = _free_port()
        self.log_path = (log_dir or Path(settings.signing_key_file).parent) / "serve.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "veritrain"
        prefix = [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]
        serve = ["coordinator", "serve", "--workers", str(self.workers), "--port", str(self.port)]
        return [*prefix, *serve, "--log-level", "warning"]

    def __enter__(self) -> "ReplicaServer":
        env = {**os.environ, **settings_env(self.settings)}
        if "blob_dir" in Settings.model_fields and self.settings.blob_dir is None:
            # replicas share one blob directory, the test's own (never the working directory)
            env["VERITRAIN_BLOB_DIR"] = str(Path(self.settings.signing_key_file).parent / "blobs")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(60)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Until every replica answers: each of them serves requests on the shared socket."""
        deadline = time.time() + timeout_s
        spawned = self.workers if self.workers > 1 else 0  # one worker serves in-process
        while len(self.replica_pids()) < spawned or not self._answers():
            if time.time() > deadline or self.process.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"replicas did not start; see {self.log_path}")
            time.sleep(0.2)
        time.sleep(1.0)  # the last replica to start may still be finishing its start-up

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/info", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def replica_pids(self) -> list[int]:
        """The replica processes: children of the supervisor started by multiprocessing spawn
        (not its resource tracker)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            return []
        return [pid for pid in pids if b"spawn_main" in _cmdline(pid)]

    def kill_replica(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
