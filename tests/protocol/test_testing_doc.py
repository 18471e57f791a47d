"""docs/testing.md's example strategy is real: its code block, saved as my_cheats.py, passes
its own tests under pytest and `veritrain conformance` reports it as held."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def example_code() -> str:
    doc = (ROOT / "docs" / "testing.md").read_text()
    return re.search(r"```python\n(.*?)```", doc, re.S).group(1)


def test_the_example_is_at_most_30_lines_of_code():
    code_lines = [line for line in example_code().splitlines() if line.strip()]
    assert len(code_lines) <= 30, len(code_lines)


def test_the_example_strategy_runs_through_the_kit_and_conformance(tmp_path):
    (tmp_path / "my_cheats.py").write_text(example_code())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "my_cheats.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr
    report = subprocess.run(
        [sys.executable, "-m", "cli.main", "conformance", "--behaviour", "my_cheats:optimizer_rot"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "optimizer-rot" in report.stdout and "conformance: PASS" in report.stdout
