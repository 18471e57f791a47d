"""`veritrain conformance --solver-cmd`: a daemon started from its command line, in a market of
its own, judged through the public API only. Our honest solver passes; our solver told to skip
its training steps fails the verification check (real subprocess daemons, real coordinator)."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SOLVER = (
    f"{shlex.quote(sys.executable)} -m cli.main solver run --key {{key}} "
    "--coordinator {coordinator} --store {store} --poll 0.3 --price 500 --stake 1600"
)


def conformance(solver_cmd: str) -> tuple[int, dict[str, dict]]:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "conformance", "--json", "--solver-cmd", solver_cmd],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert out.returncode in (0, 1), out.stderr
    result = json.loads(out.stdout)
    assert all(c["daemon"] == "solver" for c in result["daemon_checks"])
    return out.returncode, {c["check"]: c for c in result["daemon_checks"]}


def test_an_honest_solver_daemon_passes():
    code, checks = conformance(SOLVER)
    assert code == 0, checks
    assert all(c["passed"] for c in checks.values()) and len(checks) == 5


def test_a_solver_daemon_that_skips_training_fails_verification():
    code, checks = conformance(SOLVER + " --behaviour skip-steps")
    assert code == 1
    assert checks["bids and is awarded the job"]["passed"]
    assert checks["checkpoint 0 is the spec's initial state"]["passed"]  # it cheats later
    assert not checks["survives verification"]["passed"]
    assert not checks["is paid its price"]["passed"]
    assert checks["the public log audits"]["passed"]
