"""Demo benchmark: `veritrain demo --json` three times; median wall time and the cheater's
challenge → ruling time (from the public log). Writes benchmarks/results/demo.md.

Usage: python3 benchmarks/demo_bench.py [--runs 3]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "demo.md"


def run_demo() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "demo", "--json", "--report", tmp],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    summary = json.loads(out.stdout)
    summary["exit"] = out.returncode
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs = [run_demo() for _ in range(args.runs)]
    walls = [r["wall_s"] for r in runs]
    disputes = [
        j["challenge_to_ruling_s"]
        for r in runs
        for j in r["jobs"]
        if j["challenge_to_ruling_s"] is not None
    ]
    lines = [
        "# Demo benchmark",
        "",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, 2 CPUs shared, Python "
        f"{platform.python_version()}. Command: `python3 benchmarks/demo_bench.py`.",
        "",
        "| run | wall time | ok | cheater's dispute: step, chunk | challenge → ruling |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        cheat = next(j for j in r["jobs"] if j["behaviour"] != "honest")
        lines.append(
            f"| {i} | {r['wall_s']:.1f} s | {r['ok']} | {cheat['dispute_step']}, {cheat['dispute_chunk']} "
            f"| {cheat['challenge_to_ruling_s']} s |"
        )
    lines += [
        "",
        f"**Median demo wall time: {statistics.median(walls):.1f} s** (target < 120 s); "
        f"challenge → ruling median {statistics.median(disputes):.2f} s for a 10-step segment "
        "(protocol time from the `dispute.opened` to the `dispute.ruled` log entry: both daemons "
        "replay the segment, play the game over HTTP, the referee computes one step in a worker).",
        "For a 1,000-step segment on loopback see `dispute.md` (end-to-end section).",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
