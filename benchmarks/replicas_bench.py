"""Replica scaling on PostgreSQL: signed writes per second with `coordinator serve --workers 2`
divided by the same with `--workers 1`; writes benchmarks/results/replicas.md.

Both are measured in one run, alternating (1, 2, 1, 2, ...) so that drift in the machine's load
hits both alike; each phase gets a fresh schema, a fresh server and the same load: `--clients`
threads spread over two load-generator processes (so the generator's own GIL is not the limit),
each thread its own key, transferring 1 unit to its own payee (POST /v1/accounts/transfer:
signature check, nonce, idempotency record, ledger postings, signed log append), for `--seconds`.

Usage: python3 benchmarks/replicas_bench.py [--rounds 3] [--seconds 10] [--clients 16] [--quick]
Needs VERITRAIN_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "replicas.md"
LOAD_PROCESSES = 2


def _load(url: str, threads: int, start_at: float, seconds: float) -> tuple[int, list[float]]:
    """One load-generator process: `threads` funded clients transferring until the window ends;
    returns (acknowledged transfers, their latencies)."""
    from nacl.signing import SigningKey

    from sdk.client import CoordinatorClient

    clients = [CoordinatorClient(url, SigningKey.generate()) for _ in range(threads)]
    for client in clients:
        client.faucet(10**9)
    payees = [bytes(SigningKey.generate().verify_key).hex() for _ in clients]
    latencies: list[list[float]] = [[] for _ in clients]

    def run(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + seconds
        while time.time() < end:
            started = time.perf_counter()
            clients[i].transfer(payees[i], 1)
            latencies[i].append(time.perf_counter() - started)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for client in clients:
        client.close()
    flat = [x for mine in latencies for x in mine]
    return len(flat), flat


def measure(workers: int, clients: int, seconds: float) -> dict:
    from tests.coordinator.server import (
        ReplicaServer,
        get_postgres_url,
        make_settings,
        postgres_schema,
    )

    with (
        tempfile.TemporaryDirectory(prefix="veritrain-replicas-bench-") as tmp,
        postgres_schema(get_postgres_url()) as url,
    ):
        settings = make_settings(
            url, Path(tmp), rate_limit_per_s=0
        )  # one key at full speed: measure throughput, not the limiter
        with ReplicaServer(settings, workers) as server:
            start_at = time.time() + 8  # every generator funded and waiting before the window
            per_process = [clients // LOAD_PROCESSES] * LOAD_PROCESSES
            with ProcessPoolExecutor(LOAD_PROCESSES) as pool:
                futures = [
                    pool.submit(_load, server.url, n, start_at, seconds) for n in per_process
                ]
                results = [f.result() for f in futures]
    load_after = os.getloadavg()[0]
    latencies = sorted(x for _, lat in results for x in lat)
    done = sum(count for count, _ in results)
    return {
        "workers": workers,
        "rps": done / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "requests": done,
        "load": load_after,  # the host's 1-minute load average as the window closed
    }


def write_report(phases: list[dict], args: argparse.Namespace) -> str:
    ratios = [two["rps"] / one["rps"] for one, two in zip(phases[::2], phases[1::2], strict=True)]
    lines = [
        "# Coordinator replicas on PostgreSQL: --workers 2 vs --workers 1",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared with other work), Python {platform.python_version()}, "
        "PostgreSQL on the same host, loopback. Command: "
        f"`python3 benchmarks/replicas_bench.py --rounds {args.rounds} --seconds {args.seconds} "
        f"--clients {args.clients}`.",
        "",
        f"{args.clients} clients (threads in {LOAD_PROCESSES} load-generator processes), each "
        f"its own key paying its own payee, for {args.seconds:g} s per phase; phases alternate "
        "1, 2, 1, 2, … workers, each on a fresh schema and server.",
        "",
        "| round | workers | signed writes/s | p50 | p99 | requests | host load (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, phase in enumerate(phases):
        lines.append(
            f"| {i // 2 + 1} | {phase['workers']} | {phase['rps']:.0f} | "
            f"{phase['p50'] * 1000:.1f} ms | {phase['p99'] * 1000:.1f} ms | {phase['requests']} | "
            f"{phase['load']:.1f} |"
        )
    lines += [
        "",
        "**Ratio --workers 2 ÷ --workers 1, per round: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; median {statistics.median(ratios):.2f}.**",
        "",
        "Reading it: the replicas, PostgreSQL and the load generators share the host's "
        f"{os.cpu_count()} CPUs, so a second replica adds throughput only where a CPU would "
        "otherwise idle; a host load above its CPU count means none did. Whatever the cores, "
        "every value-moving write locks the one log-head row until it commits, so write "
        "throughput is bounded by commit latency, not by replica count: replicas buy fault "
        "tolerance and read capacity first.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not os.environ.get("VERITRAIN_TEST_POSTGRES_URL"):
        print(
            "replicas_bench: set VERITRAIN_TEST_POSTGRES_URL to a PostgreSQL database",
            file=sys.stderr,
        )
        return 2
    if args.quick:
        args.rounds, args.seconds = 1, 3.0
    phases = []
    for _ in range(args.rounds):
        for workers in (1, 2):
            phases.append(measure(workers, args.clients, args.seconds))
            print(phases[-1], flush=True)
    report = write_report(phases, args)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
