"""`veritrain demo --workers N` needs PostgreSQL. The demo itself runs on two replicas sharing
PostgreSQL in tests/daemons/test_daemons.py::test_demo_json wherever PostgreSQL is reachable."""

import subprocess
import sys

from tests.coordinator.server import ROOT


def test_demo_refuses_several_workers_without_postgres():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs --database-url" in out.stderr
