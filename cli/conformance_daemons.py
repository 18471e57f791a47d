"""Daemon conformance: a solver or verifier implementation, started from its command line, in a
market of its own on this machine (a dev coordinator on loopback, honest counterparts of ours),
judged only by what the public API and the public log show.

- solver: one `mlp` job (4 steps, 2 segments), open for bids 20 s after the daemon starts; our
  honest verifier replays every segment. It must be awarded the job, commit the spec's initial state as checkpoint 0, survive verification and
  be paid; the log must audit.
- verifier: two `mlp` jobs, one trained honestly by our solver and one by our solver that
  perturbs step 7. It must stake, approve the honest job (and be paid its fee), win the dispute
  over the cheat; the log must audit.

The command line gets {coordinator} (URL), {key} (a funded key file) and {store} (an empty
directory) filled in. The market's terms: bounty 1000, minimum solver stake 1600, verifier fee
50, one verifier per job.
"""

import json
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from cli.account_cmd import get_history
from cli.audit_cmd import check_coordinator
from cli.demo import BIDDING_S, BOUNTY, FEE, STAKE, Demo, _job_spec, _spawn, _stop
from cli.job import JobStatus, get_job_status
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState
from sdk.client import CoordinatorClient

UNDER_TEST = "under-test"
HONEST_JOB = ("mlp", 4, 2)  # model, steps, checkpoint interval
CHEATED_JOB = ("mlp", 10, 5)  # perturb-step alters step 7: inside segment 2
OUR_VERIFIER_STAKE = 2000
# A daemon under test gets this long from its start to bid: it may be slow to import and poll.
SOLVER_BIDDING_S = 20


def check_daemons(solver_cmd: str | None, verifier_cmd: str | None, timeout: float) -> list[dict]:
    rows = []
    if solver_cmd:
        rows += _in_market(lambda m: m.check_solver(solver_cmd), timeout)
    if verifier_cmd:
        rows += _in_market(lambda m: m.check_verifier(verifier_cmd), timeout)
    return rows


def _in_market(scenario, timeout: float) -> list[dict]:
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="veritrain-conformance-") as tmp:
        try:
            return scenario(Market(Path(tmp), processes, time.time() + timeout))
        finally:
            _stop(processes)


class Market:
    def __init__(self, workdir: Path, processes: list[subprocess.Popen], deadline: float):
        self.workdir, self.processes, self.deadline = workdir, processes, deadline
        self.demo = Demo(workdir, processes)
        self.submitter = self.demo.start_coordinator(deadline)

    # --- scenarios ------------------------------------------------------------------------------
    def check_solver(self, command: str) -> list[dict]:
        verifier = self._start_ours("verifier", "verifier", "--stake", str(OUR_VERIFIER_STAKE))
        self._wait_staked(verifier)
        solver = self._start_theirs(command)
        job_id = self._submit(HONEST_JOB, bidding_s=SOLVER_BIDDING_S)
        status = self._wait_done([job_id])[0]
        settled = [h for h in self._history(solver, job_id) if h["kind"] == "job.settled"]
        planted = self._log_kinds(job_id) & {"job.planted_initial_state"}
        return self._rows(
            "solver",
            [
                (
                    "bids and is awarded the job",
                    status.job.solver == solver,
                    f"solver {status.job.solver}",
                ),
                ("checkpoint 0 is the spec's initial state", not planted, sorted(planted)),
                (
                    "survives verification",
                    status.job.state is JobState.SETTLED,
                    self._state(status),
                ),
                (
                    "is paid its price",
                    sum(h["change"] for h in settled) > 0,
                    f"{len(settled)} payouts",
                ),
            ],
        )

    def check_verifier(self, command: str) -> list[dict]:
        verifier = self._start_theirs(command)
        staked = self._wait_staked(verifier, must=False)
        honest, cheated = self._job_id(HONEST_JOB), self._job_id(CHEATED_JOB)
        self._start_ours("honest-solver", "solver", "--only-job", honest, *self._bid_args(500))
        self._start_ours(
            "cheating-solver",
            "solver",
            "--only-job",
            cheated,
            "--behaviour",
            "perturb-step",
            *self._bid_args(500),
        )
        self._wait_polling("honest-solver", "cheating-solver")
        self._submit(HONEST_JOB)
        self._submit(CHEATED_JOB)
        honest_status, cheated_status = self._wait_done([honest, cheated])
        won = [d for d in cheated_status.disputes if d.winner == "verifier"]
        fee = sum(h["change"] for h in self._history(verifier, honest) if h["change"] > 0)
        return self._rows(
            "verifier",
            [
                ("stakes as a verifier", staked, "standing stake found" if staked else "none"),
                (
                    "approves honest work and is paid",
                    honest_status.job.state is JobState.SETTLED and fee > 0,
                    f"{self._state(honest_status)}, +{fee}",
                ),
                (
                    "catches a cheat and wins its dispute",
                    cheated_status.job.state is JobState.FAILED and bool(won),
                    f"{self._state(cheated_status)}, {len(won)} disputes won",
                ),
            ],
        )

    # --- parts ----------------------------------------------------------------------------------
    def _rows(self, daemon: str, checks: list[tuple[str, bool, object]]) -> list[dict]:
        audit = check_coordinator(self.submitter)
        checks = [*checks, ("the public log audits", audit.ok, "; ".join(audit.problems[:3]))]
        return [
            {"daemon": daemon, "check": name, "passed": bool(ok), "detail": str(detail)}
            for name, ok, detail in checks
        ]

    def _start_theirs(self, command: str) -> str:
        key = self.demo.client(UNDER_TEST).public_key
        args = shlex.split(
            command.format(
                coordinator=self.demo.url,
                key=shlex.quote(str(self.workdir / "keys" / f"{UNDER_TEST}.key")),
                store=shlex.quote(str(self.workdir / UNDER_TEST)),
            )
        )
        log = open(self.workdir / f"{UNDER_TEST}.log", "wb")  # noqa: SIM115 — lives with it
        self.processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        return key

    def _start_ours(self, name: str, role: str, *extra: str) -> str:
        key = self.demo.client(name).public_key
        args = [role, "run", "--key", str(self.workdir / "keys" / f"{name}.key")]
        args += ["--coordinator", self.demo.url, "--store", str(self.workdir / name)]
        self.processes.append(
            _spawn([*args, "--poll", "0.3", *extra], self.workdir / f"{name}.log")
        )
        return key

    def _bid_args(self, price: int) -> tuple[str, ...]:
        return ("--price", str(price), "--stake", str(STAKE))

    def _wait_staked(self, key: str, must: bool = True) -> bool:
        stop = min(self.deadline, time.time() + 60)
        while time.time() < stop:
            if self.submitter.get_account(key).escrow_and_stakes.get("stake:"):
                return True
            time.sleep(0.3)
        if must:
            raise RuntimeError("our verifier did not register in time")
        return False

    def _wait_polling(self, *names: str) -> None:
        """Our solvers write their state file once they poll: only then may bidding open."""
        while not all((self.workdir / name / "state.json").exists() for name in names):
            if time.time() > self.deadline:
                raise RuntimeError(f"our solvers did not start (see {self.workdir})")
            time.sleep(0.2)

    def _job_id(self, job: tuple[str, int, int]) -> str:
        return compute_job_id(parse_job_spec(_job_spec(*job))).hex()

    def _submit(self, job: tuple[str, int, int], bidding_s: float = BIDDING_S) -> str:
        model, steps, interval = job
        self.submitter.submit_job(
            _job_spec(model, steps, interval),
            BOUNTY,
            min_stake=STAKE,
            verifier_fee=FEE,
            num_verifiers=1,
            num_segments=steps // interval,
            bidding_s=bidding_s,
        )
        return self._job_id(job)

    def _wait_done(self, job_ids: list[str]) -> list[JobStatus]:
        while True:
            statuses = [get_job_status(self.submitter, j) for j in job_ids]
            if all(s.is_done for s in statuses) or time.time() > self.deadline:
                return statuses
            time.sleep(0.5)

    def _history(self, key: str, job_id: str) -> list[dict]:
        return [h for h in get_history(self.submitter, key) if h["data"].get("job_id") == job_id]

    def _log_kinds(self, job_id: str) -> set[str]:
        client: CoordinatorClient = self.submitter
        bodies = (json.loads(e.body) for e in client.iter_log_entries(client.get_tree_head().size))
        return {b["kind"] for b in bodies if b["data"].get("job_id") == job_id}

    def _state(self, status: JobStatus) -> str:
        outcome = status.job.outcome
        return f"{status.job.state}" + (f" ({outcome})" if outcome else "")
