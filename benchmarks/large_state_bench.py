"""A job whose training state is over 1 GiB, end to end on loopback: a real coordinator, solver
and verifier daemon (subprocesses, as `veritrain demo` runs them). The solver trains and commits,
uploads the checkpoints the sampled verifier needs, the verifier downloads and replays its
segment, and the job settles. Writes benchmarks/results/large_state.md with:

- every process's peak RSS (VmHWM, read every 0.2 s while it lives): the coordinator replica, the
  worker it starts to build checkpoint 0, the solver and verifier daemons and their workers;
- solver and verifier peak RSS ÷ the state's size (target: about 3× at most), coordinator
  replica peak RSS (target: below 512 MiB);
- upload throughput (the solver's own timing of each checkpoint upload) ÷ local disk write
  throughput (the same number of bytes written and fsynced in the same directory; target ≥ 0.5).

Usage: python3 benchmarks/large_state_bench.py [--hidden 4608] [--layers 6] [--workdir DIR]
       [--database-url URL]  (default: SQLite in the work directory)
Needs about 12 GiB of free disk in the work directory, removed afterwards.
"""

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.demo import BOUNTY, FEE, STAKE, Demo, _spawn, _stop  # noqa: E402
from protocol.spec import compute_job_id, parse_job_spec  # noqa: E402
from protocol.state import compute_layout_bytes  # noqa: E402
from protocol.training import build_program  # noqa: E402
from protocol.wire import JobState  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "large_state.md"
MIB = 2**20
UPLOADED = re.compile(r"uploaded checkpoint (\d+) of job \w+ \((\d+) bytes in ([\d.]+) s\)")


def make_spec(hidden: int, layers: int, steps: int, interval: int) -> dict:
    """An MLP whose state is large and whose step is cheap (batch 8, 256 inputs)."""
    return {
        "version": 1,
        "model": {"name": "mlp", "config": {"hidden": [hidden] * layers}},
        "dataset": {
            "kind": "synthetic-classification",
            "seed": 1,
            "config": {"input_shape": [256], "classes": 10, "examples": 1024},
        },
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
        "schedule": {"name": "constant"},
        "batch_size": 8,
        "steps": steps,
        "seed": 7,
        "checkpoint_interval": interval,
        "profile": {"kind": "pinned", "intra_op_threads": 1, "cpu_capability": "avx2"},
    }


def measure_disk_write(directory: Path, size: int, repeats: int = 3) -> float:
    """Bytes per second writing `size` bytes (16 MiB pieces) and fsyncing, as the store does;
    the median of `repeats` (this virtual disk's speed varies by 2× from minute to minute)."""
    piece = os.urandom(16 * MIB)
    path = directory / "disk-write-probe"
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        with open(path, "wb") as handle:
            for offset in range(0, size, len(piece)):
                handle.write(piece[: min(len(piece), size - offset)])
            handle.flush()
            os.fsync(handle.fileno())
        rates.append(size / (time.perf_counter() - started))
        path.unlink()
    return statistics.median(rates)


class PeakSampler:
    """Every 0.2 s: VmHWM of each watched process and of its descendants, by role."""

    def __init__(self, roles: dict[str, int]):
        self.roles = roles  # role → root pid
        self.peaks: dict[tuple[str, int], tuple[str, int]] = {}  # (role, pid) → (name, bytes)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            parents = _parent_pids()
            for role, root in self.roles.items():
                for pid in [root, *_descendants(root, parents)]:
                    peak = _read_hwm(pid)
                    if peak is not None:
                        self.peaks[(role, pid)] = (_command(pid), peak)


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    return parents


def _descendants(root: int, parents: dict[int, int]) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _read_hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode() for w in argv if w][1:6]
    return " ".join(w for w in words if not w.startswith("/"))[:60]


def run(args: argparse.Namespace, workdir: Path) -> dict:
    spec = make_spec(args.hidden, args.layers, args.steps, args.interval)
    state_bytes = compute_layout_bytes(build_program(parse_job_spec(spec)).state_layout())
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    print(f"state: {state_bytes / 2**30:.2f} GiB; measuring local disk writes…", flush=True)
    disk = measure_disk_write(workdir, state_bytes)
    processes = []
    demo = Demo(workdir, processes)
    try:
        submitter = demo.start_coordinator(time.time() + 60, args.database_url)
        for name in ("solver", "verifier"):
            demo.client(name)
        solver = _spawn(
            [
                "solver",
                "run",
                "--key",
                str(workdir / "keys" / "solver.key"),
                "--coordinator",
                demo.url,
                "--store",
                str(workdir / "solver"),
                "--price",
                "600",
                "--stake",
                str(STAKE),
                "--only-job",
                job_id,
                "--poll",
                "0.3",
            ],
            workdir / "solver.log",
        )
        verifier = _spawn(
            [
                "verifier",
                "run",
                "--key",
                str(workdir / "keys" / "verifier.key"),
                "--coordinator",
                demo.url,
                "--store",
                str(workdir / "verifier"),
                "--stake",
                "2000",
                "--poll",
                "0.3",
            ],
            workdir / "verifier.log",
        )
        processes += [solver, verifier]
        sampler = PeakSampler(
            {"coordinator": processes[0].pid, "solver": solver.pid, "verifier": verifier.pid}
        )
        sampler.thread.start()
        demo.wait_registered(submitter, time.time() + 60, ["verifier"])
        while not (workdir / "solver" / "state.json").exists():  # polling before bidding opens
            time.sleep(0.2)
        started = time.time()
        submitter.submit_job(
            spec,
            BOUNTY,
            min_stake=STAKE,
            verifier_fee=FEE,
            num_verifiers=1,
            num_segments=1,
            bidding_s=4,
        )
        job = _wait_settled(submitter, job_id, started + args.timeout)
        elapsed = time.time() - started
        sampler.stop.set()
        sampler.thread.join()
        uploads = [
            (int(m[1]), int(m[2]), float(m[3]))
            for m in UPLOADED.finditer((workdir / "solver.log").read_text())
        ]
        return {
            "spec": spec,
            "state_bytes": state_bytes,
            "disk": disk,
            "uploads": uploads,
            "peaks": sampler.peaks,
            "job": job,
            "elapsed": elapsed,
            "checkpoints": job.num_checkpoints,
        }
    finally:
        _stop(processes)


def _wait_settled(client, job_id: str, deadline: float):
    last = None
    while time.time() < deadline:
        job = client.get_job(job_id)
        if job.state != last:
            print(f"  job {job.state}", flush=True)
            last = job.state
        if job.state in (JobState.SETTLED, JobState.FAILED, JobState.CANCELLED):
            return job
        time.sleep(1)
    raise RuntimeError(f"the job did not settle in time (last state {last})")


def write_results(result: dict, args: argparse.Namespace) -> str:
    state = result["state_bytes"]
    by_role: dict[str, list[tuple[str, int]]] = {}
    for (role, _pid), (name, peak) in sorted(result["peaks"].items()):
        by_role.setdefault(role, []).append((name, peak))
    upload_rate = sum(b for _, b, _ in result["uploads"]) / sum(s for *_, s in result["uploads"])
    replica = max(peak for name, peak in by_role["coordinator"] if "coordinator serve" in name)
    solver = max(peak for _, peak in by_role["solver"])
    verifier = max(peak for _, peak in by_role["verifier"])
    rows = "\n".join(
        f"| {role} | `{name}` | {peak / MIB:,.0f} | {peak / state:.2f} |"
        for role, items in by_role.items()
        for name, peak in items
    )
    uploads = ", ".join(
        f"checkpoint {i}: {b / MIB / s:,.0f} MiB/s" for i, b, s in result["uploads"]
    )
    text = f"""# A training state over 1 GiB, end to end

Run: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {platform.machine()}, {os.cpu_count()} CPUs,
Python {platform.python_version()}, database: {"PostgreSQL" if args.database_url else "SQLite"},
filesystem blob store, loopback. Command: `python3 benchmarks/large_state_bench.py`
(`--hidden {args.hidden} --layers {args.layers} --steps {args.steps} --interval {args.interval}`).

Job: mlp 256 → {args.hidden} × {args.layers} → 10 with AdamW, batch 8, {args.steps} steps, a
checkpoint every {args.interval}: **state {state / 2**30:.2f} GiB** ({state:,} bytes),
{result["checkpoints"]} checkpoints. One sampled verifier. Outcome: **{result["job"].state}**
({result["job"].outcome or "-"}) {result["elapsed"]:.0f} s after submission.

| figure | value | target |
|---|---|---|
| coordinator replica peak RSS | {replica / MIB:,.0f} MiB | < 512 MiB |
| solver peak RSS ÷ state (largest process) | {solver / state:.2f} | about 3 or less |
| verifier peak RSS ÷ state (largest process) | {verifier / state:.2f} | about 3 or less |
| upload throughput ÷ local disk write (median of 3) | {upload_rate / result["disk"]:.2f} ({upload_rate / MIB:,.0f} ÷ {result["disk"] / MIB:,.0f} MiB/s) | ≥ 0.5 |

Uploads (the solver's own timing, declare → last part → commit): {uploads}.

Peak RSS (VmHWM) of every process, read every 0.2 s while it lived:

| role | process | peak MiB | ÷ state |
|---|---|---|---|
{rows}
"""
    RESULTS.write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=4608)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="veritrain-large-", dir=args.workdir))
    try:
        print(write_results(run(args, workdir), args))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
