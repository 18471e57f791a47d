"""`veritrain demo`: a whole marketplace on this machine, as real processes.

A coordinator (SQLite in a temporary directory, dev mode, a free loopback port), two honest
solvers, one solver that perturbs training step 7, and two verifiers — each its own `veritrain`
subprocess. A submitter posts an `mlp`, a `cnn` and a `gpt-tiny` job; each solver is pointed at
one job (the cheater at `mlp`), verifiers replay every segment; the cheater's dispute is bisected
to one step and one chunk and ruled by the referee. Ends with a table, an HTML report with plots,
and an audit of the public log. Exit 0 only if honest solvers were paid, the cheater was slashed
and the audit passed.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from nacl.signing import SigningKey
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.account_cmd import get_history
from cli.audit_cmd import check_coordinator
from cli.job import JobStatus, get_job_status
from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState
from sdk.client import CoordinatorClient
from sdk.keys import create_key_file

# name, model, steps, checkpoint interval, behaviour, price
SOLVERS = [
    ("cheater", "mlp", 20, 10, "perturb-step", 500),
    ("honest-a", "cnn", 10, 5, "honest", 550),
    ("honest-b", "gpt-tiny", 6, 3, "honest", 600),
]
VERIFIERS = [("verifier-1", 2000), ("verifier-2", 2000)]
BOUNTY, FEE, STAKE, FUNDS = 1000, 50, 1600, 10_000  # STAKE: the stake rule 5/3·950/k at k = 1
BIDDING_S = 4  # solvers are already polling when jobs appear
COORDINATOR_ENV = {
    "VERITRAIN_MOVE_TIMEOUT_S": "60",  # nobody is meant to be late; a loaded machine must not make them
    "VERITRAIN_CHALLENGE_WINDOW_S": "2",
    "VERITRAIN_SWEEP_INTERVAL_S": "0.5",
    "VERITRAIN_MIN_BIDDING_S": "0",
    "VERITRAIN_HEARTBEAT_TIMEOUT_S": "120",
    "VERITRAIN_COMMIT_TIMEOUT_S": "300",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a local marketplace with a cheater (about a minute)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of a table"
    )
    parser.add_argument(
        "--report", help="directory for report.html and its plots (default: ./veritrain-demo)"
    )
    parser.add_argument(
        "--timeout", type=float, default=240, help="give up after this many seconds"
    )
    parser.add_argument(
        "--database-url",
        help="the coordinator's database, e.g. an empty PostgreSQL database or schema "
        "(default: SQLite in the temporary directory)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="coordinator replica processes (more than 1 needs --database-url on PostgreSQL)",
    )
    parser.set_defaults(func=cmd_demo)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115 — lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parent.parent,
    )


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _wait_for(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the coordinator exited at start-up (see coordinator.log)")
        try:
            httpx.get(url + "/v1/info", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the coordinator did not start in time")


def _job_spec(model: str, steps: int, interval: int) -> dict:
    spec = example_job_spec_json(model, steps=steps)
    spec["checkpoint_interval"] = interval
    return spec


class Demo:
    def __init__(self, workdir: Path, processes: list[subprocess.Popen]):
        self.workdir, self.processes = workdir, processes
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.keys: dict[str, SigningKey] = {}
        self.metrics_ports: dict[str, int] = {}  # daemon name → its --metrics-port

    def start_coordinator(
        self, deadline: float, database_url: str | None = None, workers: int = 1
    ) -> CoordinatorClient:
        coordinator = _spawn(
            [
                "coordinator",
                "serve",
                "--dev",
                "--port",
                self.url.rsplit(":", 1)[1],
                "--database-url",
                database_url or f"sqlite:///{self.workdir / 'coordinator.db'}",
                "--workers",
                str(workers),
                "--key-file",
                str(self.workdir / "coordinator.key"),
                "--log-level",
                "warning",
            ],
            self.workdir / "coordinator.log",
            # blobs stay in the temporary directory whatever the database
            {**COORDINATOR_ENV, "VERITRAIN_BLOB_DIR": str(self.workdir / "blobs")},
        )
        self.processes.append(coordinator)
        _wait_for(self.url, coordinator, deadline)
        return self.client("submitter")

    def client(self, name: str) -> CoordinatorClient:
        if name not in self.keys:
            self.keys[name] = create_key_file(self.workdir / "keys" / f"{name}.key")
            CoordinatorClient(self.url, self.keys[name]).faucet(FUNDS)
        return CoordinatorClient(self.url, self.keys[name], timeout=httpx.Timeout(60, connect=5))

    def start_verifiers(self) -> None:
        for name, stake in VERIFIERS:
            self.client(name)
            self.processes.append(
                _spawn(
                    [
                        "verifier",
                        "run",
                        "--key",
                        str(self.workdir / "keys" / f"{name}.key"),
                        "--coordinator",
                        self.url,
                        "--store",
                        str(self.workdir / name),
                        "--stake",
                        str(stake),
                        "--poll",
                        "0.3",
                        *self._metrics_args(name),
                    ],
                    self.workdir / f"{name}.log",
                )
            )

    def _metrics_args(self, name: str) -> list[str]:
        self.metrics_ports[name] = _free_port()
        return ["--metrics-port", str(self.metrics_ports[name])]

    def scrape_metrics(self) -> dict[str, str]:
        """The coordinator's /metrics and every daemon's, as exposed while the market runs."""
        scraped = {"coordinator": httpx.get(f"{self.url}/metrics", timeout=10).text}
        for name, port in self.metrics_ports.items():
            scraped[name] = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return scraped

    def wait_ready(self, submitter: CoordinatorClient, deadline: float) -> None:
        """Verifiers registered and solvers polling: only then may bidding open."""
        for name, *_ in SOLVERS:
            while not (self.workdir / name / "state.json").exists():
                if time.time() > deadline:
                    raise RuntimeError(f"{name} did not start (see {name}.log)")
                time.sleep(0.2)
        self.wait_registered(submitter, deadline)

    def wait_registered(
        self, submitter: CoordinatorClient, deadline: float, names: list[str] | None = None
    ) -> None:
        for name in names or [name for name, _ in VERIFIERS]:
            key = bytes(self.keys[name].verify_key).hex()
            while not submitter.get_account(key).escrow_and_stakes.get("stake:"):
                if time.time() > deadline:
                    raise RuntimeError(f"{name} did not register (see {name}.log)")
                time.sleep(0.2)

    def start_solvers(self) -> list[dict]:
        """Each solver is pointed at its job by id (the hash of the spec, known in advance), so it
        is up and polling before bidding opens."""
        jobs = []
        for name, model, steps, interval, behaviour, price in SOLVERS:
            spec = _job_spec(model, steps, interval)
            job_id = compute_job_id(parse_job_spec(spec)).hex()
            self.client(name)
            self.processes.append(
                _spawn(
                    [
                        "solver",
                        "run",
                        "--key",
                        str(self.workdir / "keys" / f"{name}.key"),
                        "--coordinator",
                        self.url,
                        "--store",
                        str(self.workdir / name),
                        "--price",
                        str(price),
                        "--stake",
                        str(STAKE),
                        "--behaviour",
                        behaviour,
                        "--only-job",
                        job_id,
                        "--poll",
                        "0.3",
                        *self._metrics_args(name),
                    ],
                    self.workdir / f"{name}.log",
                )
            )
            jobs.append(
                {
                    "job_id": job_id,
                    "model": model,
                    "solver": name,
                    "behaviour": behaviour,
                    "price": price,
                    "spec": spec,
                    "segments": steps // interval,
                }
            )
        return jobs

    def submit(self, submitter: CoordinatorClient, jobs: list[dict]) -> None:
        for job in jobs:
            submitter.submit_job(
                job.pop("spec"),
                BOUNTY,
                min_stake=STAKE,
                verifier_fee=FEE,
                num_verifiers=1,
                num_segments=job.pop("segments"),
                bidding_s=BIDDING_S,
            )


def _progress_table(statuses: list[JobStatus], jobs: list[dict], elapsed: float) -> Table:
    table = Table(title=f"veritrain demo — {elapsed:.0f} s")
    for column in ("job", "model", "solver", "state", "dispute"):
        table.add_column(column)
    for job, status in zip(jobs, statuses, strict=True):
        dispute = (
            "; ".join(
                f"{d.phase} step={d.dispute_step} chunk={d.dispute_chunk}"
                f"{' → ' + d.winner if d.winner else ''}"
                for d in status.disputes
            )
            or "-"
        )
        outcome = status.job.outcome
        table.add_row(
            job["job_id"][:10],
            job["model"],
            f"{job['solver']} ({job['behaviour']})",
            status.job.state + (f" ({outcome})" if outcome else ""),
            dispute,
        )
    return table


def _wait_for_jobs(
    client: CoordinatorClient, jobs: list[dict], deadline: float, show: bool
) -> list[JobStatus]:
    start = time.time()
    with (
        Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
        if show
        else ExitStack() as live
    ):
        while True:
            statuses = [get_job_status(client, j["job_id"]) for j in jobs]
            if show:
                live.update(_progress_table(statuses, jobs, time.time() - start))
            if all(s.is_done for s in statuses) or time.time() > deadline:
                return statuses
            time.sleep(0.5)


def _summarise(
    client: CoordinatorClient, jobs: list[dict], statuses: list[JobStatus], demo: Demo
) -> list[dict]:
    log = [json.loads(e.body) for e in client.iter_log_entries(client.get_tree_head().size)]
    rows = []
    for job, status in zip(jobs, statuses, strict=True):
        key = bytes(demo.keys[job["solver"]].verify_key).hex()
        history = [h for h in get_history(client, key) if h["data"].get("job_id") == job["job_id"]]
        slashed = sum(
            -h["accounts"].get(f"stake:{key}:{job['job_id']}", 0)
            for h in history
            if h["kind"] == "job.solver_slashed"
        )
        paid = sum(h["change"] for h in history if h["kind"] == "job.settled")
        dispute = status.disputes[0] if status.disputes else None
        rows.append(
            {
                **job,
                "outcome": status.job.outcome or status.job.state,
                "state": status.job.state,
                "dispute_step": dispute.dispute_step if dispute else None,
                "dispute_chunk": dispute.dispute_chunk if dispute else None,
                "dispute_winner": dispute.winner if dispute else None,
                "slashed": slashed,
                "paid": paid,
                "challenge_to_ruling_s": _challenge_to_ruling(log, job["job_id"]),
            }
        )
    return rows


def _challenge_to_ruling(log: list[dict], job_id: str) -> float | None:
    """Protocol time from the verifier's revealing reveal to the ruling, from the public log."""
    times = {
        e["kind"]: e["time"]
        for e in log
        if e["data"].get("job_id") == job_id and e["kind"] in ("dispute.opened", "dispute.ruled")
    }
    if len(times) < 2:
        return None
    return round(times["dispute.ruled"] - times["dispute.opened"], 2)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.workers > 1 and not (args.database_url or "").startswith("postgresql"):
        print(
            "veritrain demo: --workers > 1 needs --database-url postgresql+psycopg://...",
            file=sys.stderr,
        )
        return 2
    started = time.time()
    deadline = started + args.timeout
    report_dir = Path(args.report or "veritrain-demo")
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="veritrain-demo-") as tmp:
        demo = Demo(Path(tmp), processes)
        try:
            submitter = demo.start_coordinator(deadline, args.database_url, args.workers)
            demo.start_verifiers()
            jobs = demo.start_solvers()
            demo.wait_ready(submitter, deadline)
            demo.submit(submitter, jobs)
            statuses = _wait_for_jobs(submitter, jobs, deadline, show=not args.json)
            rows = _summarise(submitter, jobs, statuses, demo)
            audit = check_coordinator(submitter)
            metrics = demo.scrape_metrics()
            from cli.demo_report import write_report

            write_report(report_dir, Path(tmp), submitter, rows, demo.keys)
        finally:
            _stop(processes)
    summary = {
        "jobs": rows,
        "ledger_conserved": audit.ok,
        "audit_ok": audit.ok,
        "audit_problems": audit.problems[:10],
        "wall_s": round(time.time() - started, 1),
        "report": str(report_dir / "report.html"),
        "metrics": metrics,  # Prometheus text, scraped before the market stopped
    }
    honest_paid = all(
        r["state"] is JobState.SETTLED and r["paid"] > 0 for r in rows if r["behaviour"] == "honest"
    )
    cheater_slashed = all(
        r["state"] is JobState.FAILED and r["slashed"] > 0
        for r in rows
        if r["behaviour"] != "honest"
    )
    summary["ok"] = honest_paid and cheater_slashed and audit.ok
    _print_summary(summary, args.json)
    return 0 if summary["ok"] else 1


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(
        title=f"veritrain demo: {'OK' if summary['ok'] else 'FAILED'} in {summary['wall_s']} s"
    )
    for column in (
        "job",
        "model",
        "solver",
        "behaviour",
        "outcome",
        "dispute step",
        "chunk",
        "slashed",
        "paid",
    ):
        table.add_column(column)
    for r in summary["jobs"]:
        table.add_row(
            r["job_id"][:10],
            r["model"],
            r["solver"],
            r["behaviour"],
            r["outcome"],
            str(r["dispute_step"] if r["dispute_step"] is not None else "-"),
            str(r["dispute_chunk"] if r["dispute_chunk"] is not None else "-"),
            str(r["slashed"]),
            str(r["paid"]),
        )
    console = Console()
    console.print(table)
    console.print(
        f"ledger audit: {'passed' if summary['audit_ok'] else 'FAILED'}; report: {summary['report']}"
    )
