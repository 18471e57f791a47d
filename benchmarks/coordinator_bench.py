"""Coordinator benchmarks (loopback only, bounded loops); writes benchmarks/results/coordinator.md.

1. Throughput: signed mutating requests (POST /v1/accounts/transfer: signature check, nonce,
   idempotency record, ledger postings, signed log append) per second, divided by a bare
   FastAPI + SQLAlchemy endpoint doing one insert — same uvicorn settings, same database engine
   factory and pragmas, same concurrency, same run. Target >= 0.5.
2. Scaling: p99 latency of bid and commitment requests with 10^4 jobs in the ledger divided by
   the same with 10^2 jobs. Target <= 1.2 (nothing on the hot path grows with history).

Usage: python3 benchmarks/coordinator_bench.py [--database sqlite|postgres] [--quick]
PostgreSQL needs VERITRAIN_TEST_POSTGRES_URL; each run uses a fresh schema.
"""

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdk.client import CoordinatorClient  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "coordinator.md"


# --- servers (run in a child process so the load generator does not share their GIL) ---------


def build_bare_app(url: str):
    """The baseline: one FastAPI endpoint inserting one row through SQLAlchemy."""
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sqlalchemy import Integer, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from coordinator.db import Database

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "bench_rows"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        value: Mapped[str] = mapped_column(String(64))

    class Body(BaseModel):
        value: str

    db = Database(url)
    Base.metadata.create_all(db.engine)
    app = FastAPI()

    @app.post("/insert")
    def insert(body: Body) -> dict:
        def tx(session):
            row = Row(value=body.value)
            session.add(row)
            session.flush()
            return row.id

        return {"id": db.write(tx)}

    return app


def serve(kind: str, url: str, port: int, key_file: str) -> None:
    import uvicorn

    if kind == "bare":
        app = build_bare_app(url)
    else:
        from coordinator.app import create_app
        from coordinator.settings import tiny_preset

        app = create_app(
            tiny_preset(
                database_url=url,
                signing_key_file=Path(key_file),
                min_bidding_s=0,
                commit_timeout_s=10**6,
                heartbeat_timeout_s=10**6,
                rate_limit_per_s=0,  # the bench measures throughput, one key at full speed
                max_open_jobs_per_key=10**6,  # and posts 10^4 jobs from one key
            )
        )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(kind: str, url: str, tmp: Path):
    port = _free_port()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.coordinator_bench import serve; "
        f"serve({kind!r}, {url!r}, {port}, {str(tmp / 'key')!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(base + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def database(kind: str, tmp: Path, name: str):
    if kind == "sqlite":
        yield f"sqlite:///{tmp / (name + '.db')}"
        return
    from tests.coordinator.server import get_postgres_url, postgres_schema

    with postgres_schema(get_postgres_url()) as url:
        yield url


# --- measurement helpers ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_concurrent(workers: int, per_worker: int, make_call) -> tuple[float, list[float]]:
    """Run `per_worker` calls on each of `workers` threads; returns (requests/s, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    calls = [make_call(i) for i in range(workers)]
    barrier = threading.Barrier(workers + 1)

    def worker(call) -> None:
        mine = []
        barrier.wait()
        for n in range(per_worker):
            t = time.perf_counter()
            call(n)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return workers * per_worker / (time.perf_counter() - start), latencies


def bench_throughput(db_kind: str, tmp: Path, workers: int, per_worker: int) -> dict:
    transport = httpx.HTTPTransport()
    with database(db_kind, tmp, "bare") as url, server_process("bare", url, tmp) as base:
        http = httpx.Client(base_url=base, transport=transport)
        http.post("/insert", json={"value": "warm"})
        bare_rps, bare_lat = run_concurrent(
            workers,
            per_worker,
            lambda i: lambda n: http.post("/insert", json={"value": f"{i}-{n}"}).raise_for_status(),
        )
    with database(db_kind, tmp, "signed") as url, server_process("coordinator", url, tmp) as base:
        # each client pays its own payee (as unrelated market traffic would); the log head is
        # still one row that every transaction locks
        sinks = [bytes(SigningKey.generate().verify_key).hex() for _ in range(workers)]
        clients = [
            CoordinatorClient(base, SigningKey.generate(), transport=transport)
            for _ in range(workers)
        ]
        for c in clients:
            c.faucet(10**9)
        signed_rps, signed_lat = run_concurrent(
            workers, per_worker, lambda i: lambda n: clients[i].transfer(sinks[i], 1)
        )
    return {
        "bare_rps": bare_rps,
        "bare_p50": percentile(bare_lat, 0.5),
        "bare_p99": percentile(bare_lat, 0.99),
        "signed_rps": signed_rps,
        "signed_p50": percentile(signed_lat, 0.5),
        "signed_p99": percentile(signed_lat, 0.99),
        "ratio": signed_rps / bare_rps,
    }


# --- scaling: p99 of bid and commitment with 10^2 vs 10^4 jobs ----------------------------------


def populate_jobs(url: str, tmp: Path, count: int, submitter: str) -> list[str]:
    """Insert `count` open jobs through the service layer (100 per transaction: fast set-up)."""
    from coordinator.accounts.service import process_faucet
    from coordinator.app import create_runtime
    from coordinator.jobs.schemas import SubmitJobRequest
    from coordinator.jobs.service import process_submit
    from coordinator.settings import tiny_preset
    from tests.coordinator.market import tiny_spec_json

    rt = create_runtime(tiny_preset(database_url=url, signing_key_file=tmp / "key"))
    rt.db.write(lambda s: process_faucet(s, rt, submitter, 10**12))
    ids: list[str] = []
    for start in range(0, count, 100):

        def batch(session, start=start):
            return [
                process_submit(
                    session,
                    rt,
                    submitter,
                    SubmitJobRequest(
                        spec=tiny_spec_json(seed=10_000 + n), bounty=1000, bidding_s=86_400
                    ),
                ).job_id
                for n in range(start, min(count, start + 100))
            ]

        ids += rt.db.write(batch)
    rt.db.dispose()
    return ids


class ScalingSide:
    """One coordinator with `jobs` open jobs, and the clients that measure it."""

    def __init__(
        self,
        base: str,
        jobs: list[str],
        submitter_key: SigningKey,
        samples: int,
        bid_jobs: int,
        profile: str,
    ):
        transport = httpx.HTTPTransport()
        self.profile = profile
        self.sub = CoordinatorClient(base, submitter_key, transport=transport)
        self.solvers = [
            CoordinatorClient(base, SigningKey.generate(), transport=transport)
            for _ in range(-(-samples // bid_jobs))
        ]
        for solver in self.solvers:
            solver.faucet(10**12)
        for _ in range(5):
            verifier = CoordinatorClient(base, SigningKey.generate(), transport=transport)
            verifier.faucet(1000)
            verifier.register_verifier([profile], 500)
        self.targets = jobs[-bid_jobs:]
        self.bid_lat: list[float] = []
        self.commit_lat: list[float] = []
        self.commit_jobs: list[tuple[str, dict]] = []

    def bid(self, n: int) -> None:
        t = time.perf_counter()
        self.solvers[n // len(self.targets)].bid(
            self.targets[n % len(self.targets)], 10, 10, self.profile
        )
        self.bid_lat.append(time.perf_counter() - t)

    def prepare_commit(self, n: int) -> None:
        from tests.coordinator.market import tiny_spec_json

        spec = tiny_spec_json(seed=900_000 + n)
        job_id = self.sub.submit_job(spec, 1000, bidding_s=1).job_id
        self.solvers[0].bid(job_id, 10, 10, self.profile)
        self.commit_jobs.append((job_id, spec))

    def commit(self, n: int) -> None:
        from protocol.trajectory import compute_trajectory_proof, sign_commitment
        from tests.coordinator.market import untrained_trajectory

        solver, (job_id, spec) = self.solvers[0], self.commit_jobs[n]
        c, entries = untrained_trajectory(spec, 3)  # its checkpoint 0 is the spec's own
        signature, proof = sign_commitment(solver.key, c), compute_trajectory_proof(entries, 0)
        t = time.perf_counter()
        solver.commit(job_id, c.to_json(), signature, entries[0][1], proof)
        self.commit_lat.append(time.perf_counter() - t)

    def summary(self) -> dict:
        return {
            "bid_p50": percentile(self.bid_lat, 0.5),
            "bid_p99": percentile(self.bid_lat, 0.99),
            "commit_p50": percentile(self.commit_lat, 0.5),
            "commit_p99": percentile(self.commit_lat, 0.99),
            "bids": len(self.bid_lat),
            "commits": len(self.commit_lat),
        }


def bench_scaling(
    db_kind: str, tmp: Path, sizes: tuple[int, int], samples: int, bid_jobs: int = 100
) -> tuple[dict, dict]:
    """Both ledgers are populated first, then both servers run side by side and the requests
    alternate between them one by one, so machine noise hits both sizes alike. Bids: `samples`
    bids over the newest `bid_jobs` jobs; commitments: `samples` freshly awarded jobs."""
    from protocol.spec import parse_job_spec
    from tests.coordinator.market import tiny_spec_json

    submitter_key = SigningKey.generate()
    submitter = bytes(submitter_key.verify_key).hex()
    profile = parse_job_spec(tiny_spec_json()).profile.label
    with database(db_kind, tmp, "small") as small_url, database(db_kind, tmp, "large") as large_url:
        small_jobs = populate_jobs(small_url, tmp, sizes[0], submitter)
        large_jobs = populate_jobs(large_url, tmp, sizes[1], submitter)
        with (
            server_process("coordinator", small_url, tmp) as small_base,
            server_process("coordinator", large_url, tmp) as large_base,
        ):
            sides = [
                ScalingSide(small_base, small_jobs, submitter_key, samples, bid_jobs, profile),
                ScalingSide(large_base, large_jobs, submitter_key, samples, bid_jobs, profile),
            ]
            for n in range(samples):
                for side in sides:
                    side.bid(n)
            run_commitments(sides, samples)  # as many as bids: a p99 of 150 is its 2nd-worst
    return sides[0].summary(), sides[1].summary()


def run_commitments(sides: list[ScalingSide], samples: int) -> None:
    """Post, award and commit `samples` jobs per side, the sides alternating request by
    request so that noise on this shared machine hits both alike."""
    for n in range(samples):
        for side in sides:
            side.prepare_commit(n)
    time.sleep(1.1)  # past the minimum bidding window
    for side in sides:
        for job_id, _spec in side.commit_jobs:
            side.solvers[0].award(job_id)
    for n in range(samples):
        for side in sides:
            side.commit(n)


# --- report --------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def write_report(db_kind: str, tp: dict, small: dict, large: dict, args) -> str:
    bid_ratio = large["bid_p99"] / small["bid_p99"]
    commit_ratio = large["commit_p99"] / small["commit_p99"]
    lines = [
        f"# Coordinator benchmarks ({db_kind})",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, database: {db_kind}, "
        "uvicorn 1 worker in a child process, loopback. Command: "
        f"`python3 benchmarks/coordinator_bench.py --database {args.database}{' --quick' if args.quick else ''}`.",
        "",
        "## Signed mutating requests vs a bare insert endpoint",
        "",
        f"{args.workers} concurrent clients × {args.requests} requests each; each client transfers to "
        "its own payee; the bare endpoint inserts one row per request.",
        "",
        "| endpoint | requests/s | p50 | p99 |",
        "|---|---|---|---|",
        f"| bare FastAPI + SQLAlchemy, one INSERT | {tp['bare_rps']:.0f} | {ms(tp['bare_p50'])} | {ms(tp['bare_p99'])} |",
        f"| signed POST /v1/accounts/transfer | {tp['signed_rps']:.0f} | {ms(tp['signed_p50'])} | {ms(tp['signed_p99'])} |",
        "",
        f"**Ratio signed ÷ bare: {tp['ratio']:.2f}** (target ≥ 0.5).",
        "",
        "## Latency with history: 10^2 vs 10^4 jobs in the ledger",
        "",
        "| jobs | bid p50 | bid p99 | commitment p50 | commitment p99 |",
        "|---|---|---|---|---|",
        f"| {args.small} | {ms(small['bid_p50'])} | {ms(small['bid_p99'])} | {ms(small['commit_p50'])} | {ms(small['commit_p99'])} |",
        f"| {args.large} | {ms(large['bid_p50'])} | {ms(large['bid_p99'])} | {ms(large['commit_p50'])} | {ms(large['commit_p99'])} |",
        "",
        f"**p99 ratio {args.large} ÷ {args.small} jobs: bid {bid_ratio:.2f}, commitment {commit_ratio:.2f}** "
        "(target ≤ 1.2).",
        f"Samples: {small['bids']} bids and {small['commits']} commitments per size, one sequential client, "
        "requests alternating between the two servers (running side by side) so noise hits both alike.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="smaller loops (a smoke run)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.requests = 50 if args.quick else 250
    args.small, args.large = 100, (1000 if args.quick else 10_000)
    samples = 100 if args.quick else 300
    reports = []
    for db_kind in ["sqlite", "postgres"] if args.database == "both" else [args.database]:
        with tempfile.TemporaryDirectory(prefix="veritrain-bench-") as d:
            tmp = Path(d)
            tp = bench_throughput(db_kind, tmp, args.workers, args.requests)
            print(f"{db_kind} throughput: {tp}", flush=True)
            small, large = bench_scaling(db_kind, tmp, (args.small, args.large), samples)
            print(
                f"{db_kind} {args.small} jobs: {small}\n{db_kind} {args.large} jobs: {large}",
                flush=True,
            )
        reports.append(write_report(db_kind, tp, small, large, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(reports))
    print("\n".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
