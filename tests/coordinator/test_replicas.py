"""Stateless replicas: `veritrain coordinator serve --workers 4` on one PostgreSQL database, run as
a real subprocess. One sweeper leads, each deadline is resolved once, a replica killed mid-load
loses no acknowledged write, a request replayed to another replica is refused, and the public log
stays one verifiable chain. (The racing scenarios of test_concurrency.py run on these replicas
too, through its `backend` fixture.)"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from nacl.signing import SigningKey

from coordinator.db import advisory_key
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import DisputeStatus, JobState, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError, compute_signed_headers
from tests.coordinator.market import tiny_spec_json
from tests.coordinator.server import (
    POSTGRES_ENV,
    REFEREE_TIMEOUT,
    REPLICA_COUNT,
    REPLICAS,
    ROOT,
    ReplicaServer,
    client_factory,
    database_url,
    get_postgres_url,
    make_settings,
    running_server,
)

NEEDS_POSTGRES = pytest.mark.skipif(
    get_postgres_url() is None,
    reason=f"replicas share a PostgreSQL database: need {POSTGRES_ENV}",
)
VERITRAIN = [sys.executable, "-m", "cli.main"]


def _entries(client: CoordinatorClient) -> list[dict]:
    size = client.get_tree_head().size
    return [json.loads(e.body) for e in client.iter_log_entries(size)]


def _count_kinds(entries: list[dict], kind: str) -> dict[str, int]:
    """Log entries of `kind`, counted by the job they concern."""
    counts: dict[str, int] = {}
    for entry in entries:
        if entry["kind"] == kind:
            job_id = entry["data"]["job_id"]
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def _audit(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VERITRAIN, "audit", url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _sweeper_holders(url: str) -> int:
    """How many sessions hold this coordinator's sweeper lock (pg_locks splits a bigint key
    into classid, the high half, and objid, the low half)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_database() || '.' || current_schema()"))
            key = advisory_key(schema.scalar(), "sweeper") & 0xFFFFFFFFFFFFFFFF
            return conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid::bigint = :hi AND objid::bigint = :lo AND objsubid = 1"
                ),
                {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
            ).scalar()
    finally:
        engine.dispose()


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --- the sweeper -----------------------------------------------------------------------------


def _post_jobs_with_no_show_solvers(make_client, count: int) -> tuple[CoordinatorClient, list]:
    submitter = make_client()
    submitter.faucet(100_000)
    job_ids = []
    for seed in range(100, 100 + count):
        spec = tiny_spec_json(seed=seed)
        job_id = compute_job_id(parse_job_spec(spec)).hex()
        submitter.submit_job(spec, 1000, min_stake=400, verifier_fee=50, bidding_s=30)
        solver = make_client()
        solver.faucet(1000)
        solver.bid(job_id, 600, 400, parse_job_spec(spec).profile.label)
        job_ids.append(job_id)
    return submitter, job_ids


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_one_sweeper_leads_and_each_deadline_is_resolved_once(tmp_path):
    with (
        database_url("postgres", tmp_path) as url,
        ReplicaServer(
            make_settings(url, tmp_path, run_sweeper=True, sweep_interval_s=0.2), REPLICA_COUNT
        ) as server,
        client_factory(server.url) as make,
    ):
        _wait_until(lambda: _sweeper_holders(url) == 1, 10, "a sweeper to lead")
        submitter, job_ids = _post_jobs_with_no_show_solvers(make, 6)
        sweepers = [make() for _ in range(8)]  # explicit sweeps land on every replica too

        def sweep_everywhere() -> None:
            with ThreadPoolExecutor(len(sweepers)) as pool:
                list(pool.map(lambda c: c.sweep(), sweepers))

        submitter.advance_clock(31)  # bidding closes: every replica's sweep may award
        sweep_everywhere()
        submitter.advance_clock(24 * 3600)  # no solver committed: every one is slashed
        sweep_everywhere()
        _wait_until(
            lambda: all(submitter.get_job(j).state == JobState.FAILED for j in job_ids),
            30,
            "every no-show solver to be slashed",
        )
        time.sleep(1.5)  # several more sweeps by the leader: none may act again
        sweep_everywhere()
        entries = _entries(submitter)
        assert _count_kinds(entries, "job.awarded") == dict.fromkeys(job_ids, 1)
        assert _count_kinds(entries, "job.solver_slashed") == dict.fromkeys(job_ids, 1)
        assert _sweeper_holders(url) == 1
        audit = _audit(server.url)
        assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_leadership_passes_on_when_replicas_die(tmp_path):
    with (
        database_url("postgres", tmp_path) as url,
        ReplicaServer(
            make_settings(url, tmp_path, run_sweeper=True, sweep_interval_s=0.2), REPLICA_COUNT
        ) as server,
    ):
        _wait_until(lambda: _sweeper_holders(url) == 1, 10, "a sweeper to lead")
        for pid in server.replica_pids():  # every one, so the leader is certainly among them
            server.kill_replica(pid)
        _wait_until(lambda: len(server.replica_pids()) == REPLICA_COUNT, 180, "restarted replicas")
        _wait_until(lambda: _sweeper_holders(url) == 1, 30, "a new leader")
        for _ in range(10):  # never two leaders (a replica still restarting may hand over)
            assert _sweeper_holders(url) <= 1
            time.sleep(0.2)
        _wait_until(lambda: _sweeper_holders(url) == 1, 30, "a leader after the restarts")


# --- disputes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.coordinator.market import train_tiny_job

    return train_tiny_job(tmp_path_factory.mktemp("solver"))


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_a_dispute_is_ruled_once_however_many_replicas_ask(tmp_path, trained):
    from tests.coordinator.test_disputes import open_forged_dispute, play_out_forged_dispute

    with (
        running_server(REPLICAS, tmp_path, run_sweeper=True, sweep_interval_s=0.2) as server,
        client_factory(server.url, timeout=REFEREE_TIMEOUT) as make,
    ):
        submitter, solver, verifier, forged, dispute = open_forged_dispute(make, trained)
        askers = [make() for _ in range(8)]
        stop = threading.Event()

        def keep_asking(client: CoordinatorClient) -> set:
            seen = set()
            while not stop.wait(0.1):  # under the per-key rate limit
                seen.add(client.rule_dispute(dispute.id).status)
            return seen

        with ThreadPoolExecutor(len(askers)) as pool:
            asking = [pool.submit(keep_asking, c) for c in askers]
            ruling, _, _ = play_out_forged_dispute(solver, verifier, dispute.id, trained, forged)
            stop.set()
            statuses = set().union(*(f.result() for f in asking))
        assert ruling.status == DisputeStatus.RULED and ruling.winner == "verifier"
        assert DisputeStatus.RULED in statuses
        entries = _entries(submitter)
        rulings = [e for e in entries if e["kind"] == "dispute.ruled"]
        assert [e["data"]["dispute"] for e in rulings] == [dispute.id]
        assert "referee_failures" not in solver.get_dispute(dispute.id).state
        assert solver.get_job(trained.job_id).state is JobState.FAILED
        audit = _audit(server.url)
        assert audit.returncode == 0, audit.stdout + audit.stderr


# --- a replica killed mid-load ---------------------------------------------------------------


class Payer:
    """One thread's load: transfers of 1 to fresh receivers, remembering which were
    acknowledged (a 2xx came back)."""

    def __init__(self, make_client, funds: int):
        self.client = make_client(retries=5, backoff_s=0.1)
        self.client.faucet(funds)
        self.funds = funds
        self.acknowledged: list[str] = []
        self.unanswered: list[str] = []

    def pay_until(self, stop: threading.Event, most: int) -> None:
        while not stop.is_set() and len(self.acknowledged) + len(self.unanswered) < most:
            receiver = bytes(SigningKey.generate().verify_key).hex()
            try:
                self.client.transfer(receiver, 1)
                self.acknowledged.append(receiver)
            except (httpx.TransportError, CoordinatorError):
                self.unanswered.append(receiver)


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_killing_a_replica_mid_load_loses_no_acknowledged_write(tmp_path):
    with (
        running_server(REPLICAS, tmp_path) as server,
        client_factory(server.url) as make,
    ):
        payers = [Payer(make, 1000) for _ in range(12)]
        stop = threading.Event()
        threads = [threading.Thread(target=p.pay_until, args=(stop, 80)) for p in payers]
        for t in threads:
            t.start()
        time.sleep(1.5)
        victim = server.replica_pids()[0]
        before_kill = sum(len(p.acknowledged) for p in payers)
        server.kill_replica(victim)
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        after_kill = sum(len(p.acknowledged) for p in payers)
        assert after_kill > before_kill > 0  # the load ran before and after the kill
        _wait_until(lambda: victim not in server.replica_pids(), 10, "the victim to be gone")
        _wait_until(lambda: len(server.replica_pids()) == REPLICA_COUNT, 60, "a restarted replica")
        reader = make()
        for payer in payers:
            paid = {r: reader.get_balance(r) for r in payer.acknowledged + payer.unanswered}
            assert all(paid[r] == 1 for r in payer.acknowledged)  # every acknowledged write
            assert set(paid.values()) <= {0, 1}  # and none applied twice
            assert reader.get_balance(payer.client.public_key) + sum(paid.values()) == payer.funds
        audit = _audit(server.url)
        assert audit.returncode == 0, audit.stdout + audit.stderr


# --- replay and retries across replicas ------------------------------------------------------


def _signed_transfer(key: SigningKey, to: str, idempotency_key: str) -> tuple[bytes, dict]:
    body = json.dumps({"to": to, "amount": 5}).encode()
    headers = compute_signed_headers(key, "POST", "/v1/accounts/transfer", body, idempotency_key)
    return body, {**headers, "Content-Type": "application/json"}


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_a_request_replayed_to_another_replica_is_refused(tmp_path):
    """Two `serve` processes (two hosts behind a load balancer) on one database."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        database_url("postgres", tmp_path) as url,
        ReplicaServer(make_settings(url, tmp_path), 2, tmp_path / "a") as first,
        ReplicaServer(make_settings(url, tmp_path), 2, tmp_path / "b") as second,
        client_factory(first.url) as make,
    ):
        sender = make()
        sender.faucet(100)
        receiver = bytes(SigningKey.generate().verify_key).hex()
        body, headers = _signed_transfer(sender.key, receiver, uuid.uuid4().hex)
        url_path = "/v1/accounts/transfer"
        assert httpx.post(first.url + url_path, content=body, headers=headers).status_code == 200
        replay = httpx.post(second.url + url_path, content=body, headers=headers)
        assert replay.status_code == 409, replay.text
        assert replay.json()["code"] == ProblemCode.NONCE_REUSED
        # a retry (fresh nonce, same idempotency key) to the other host replays the first answer
        retry_body, retry_headers = _signed_transfer(
            sender.key, receiver, headers["Idempotency-Key"]
        )
        retry = httpx.post(second.url + url_path, content=retry_body, headers=retry_headers)
        assert retry.status_code == 200 and retry.headers.get("Idempotent-Replayed") == "true"
        assert sender.get_balance(receiver) == 5
        assert sender.get_balance() == 95


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_racing_retries_of_one_idempotency_key_apply_once(server_with_replicas):
    make = server_with_replicas
    sender = make()
    sender.faucet(1000)
    receiver = bytes(SigningKey.generate().verify_key).hex()
    key = uuid.uuid4().hex
    clients = [make(sender.key) for _ in range(16)]
    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(lambda c: c.transfer(receiver, 7, idempotency_key=key), clients))
    assert len({r.log_index for r in results}) == 1  # one movement, one log entry, told 16 times
    assert sender.get_balance(receiver) == 7
    assert sender.get_balance() == 993


@pytest.fixture
def server_with_replicas(tmp_path):
    with running_server(REPLICAS, tmp_path) as server, client_factory(server.url) as make:
        yield make


# --- SQLite stays one process ----------------------------------------------------------------


def test_sqlite_refuses_several_workers(tmp_path):
    result = subprocess.run(
        [
            *VERITRAIN,
            "coordinator",
            "serve",
            "--workers",
            "2",
            "--database-url",
            f"sqlite:///{tmp_path / 'c.db'}",
            "--key-file",
            str(tmp_path / "c.key"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VERITRAIN_DATABASE_URL": ""},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "needs PostgreSQL" in result.stderr
    assert not Path(tmp_path / "c.key").exists() and not Path(tmp_path / "c.db").exists()


# --- the locks themselves --------------------------------------------------------------------


@pytest.mark.postgres
@NEEDS_POSTGRES
def test_claims_and_leadership_exclude_other_processes_database_sessions(tmp_path):
    from coordinator.db import Database, upgrade_database

    with database_url("postgres", tmp_path) as url:
        one, two = Database(url), Database(url)
        upgrade_database(one.engine)
        try:
            with one.claim("ruling", 7, wait=False) as held:
                assert held
                with two.claim("ruling", 7, wait=False) as also:
                    assert not also  # another session holds it
                with two.claim("ruling", 8, wait=False) as other_item:
                    assert other_item
            with two.claim("ruling", 7, wait=False) as after_release:
                assert after_release
            first, second = one.leadership("sweeper"), two.leadership("sweeper")
            assert first.is_leader() and first.is_leader()  # still leads on the next tick
            assert not second.is_leader()
            first.release()
            assert second.is_leader() and not first.is_leader()
            second.release()
        finally:
            one.dispose()
            two.dispose()


def test_sqlite_claims_are_in_process_and_leave_nothing_behind(tmp_path):
    from coordinator.db import Database

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    results = []

    def try_claim() -> None:
        with db.claim("ruling", 1, wait=False) as got:
            results.append(got)

    with db.claim("ruling", 1, wait=False) as held:
        thread = threading.Thread(target=try_claim)
        thread.start()
        thread.join()
        assert held and results == [False]
    assert db._local_claims._locks == {}  # no lock kept for an item nobody works on
    assert db.leadership("sweeper").is_leader()  # one process: always the leader
    db.dispose()
