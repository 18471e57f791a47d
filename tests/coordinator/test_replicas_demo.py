"""`veritrain demo` against two coordinator replicas on PostgreSQL: the whole market (solvers,
verifiers, the cheater's dispute and its ruling) runs with requests spread over both replicas,
and ends with honest solvers paid, the cheater slashed and a clean audit."""

import json
import subprocess
import sys

import pytest

from cli.demo import STAKE
from tests.coordinator.server import (
    POSTGRES_ENV,
    ROOT,
    get_postgres_url,
    postgres_schema,
)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(
    get_postgres_url() is None,
    reason=f"replicas share a PostgreSQL database: need {POSTGRES_ENV}",
)
def test_demo_runs_on_two_replicas_on_postgres(tmp_path):
    with postgres_schema(get_postgres_url()) as url:
        out = subprocess.run(
            [
                *(sys.executable, "-m", "cli.main", "demo", "--json"),
                *("--report", str(tmp_path / "r"), "--database-url", url, "--workers", "2"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
    summary = json.loads(out.stdout)
    assert out.returncode == 0 and summary["ok"], (summary, out.stderr[-2000:])
    cheat = next(j for j in summary["jobs"] if j["behaviour"] == "perturb-step")
    assert (cheat["dispute_step"], cheat["state"], cheat["slashed"]) == (7, "failed", STAKE)
    honest = [j for j in summary["jobs"] if j["behaviour"] == "honest"]
    assert honest and all(j["state"] == "settled" and j["paid"] > 0 for j in honest)
    assert summary["audit_ok"] and summary["ledger_conserved"]


def test_demo_refuses_several_workers_without_postgres():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs --database-url" in out.stderr
