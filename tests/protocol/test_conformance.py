"""`veritrain conformance --behaviour`: strategies written here, through the public kit alone
(`protocol.testing`, no private imports), are reported as caught or as profitable, with exit
codes that say so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.testing import Behaviour, Market, run_conformance

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.protocol.test_conformance"


class LateOptimizerFlip:
    """A solver that trains honestly but flips one optimizer-state chunk at the very last step of
    the job's last segment, hoping that segment is rarely sampled."""

    name, role, honest, policy = "late-optimizer-flip", "solver", False, "follow"
    description = "corrupts chunk 3 at the last step of segment 19"
    saved_fraction = 0.0

    def divergence(self, segment_start, segment_end, segment_index):
        return (segment_end, 3) if segment_index == 19 else None

    def transform_step(self, program, before, after, step):
        return after


late_optimizer_flip = LateOptimizerFlip()
# A verifier that never replays and approves what it sees: only planted errors can catch it.
sleepy_auditor = Behaviour(
    "sleepy-auditor",
    "verifier",
    False,
    "approves without replaying",
    saved_fraction=1.0,
    claim="start-root",
)


def conformance(*args: str) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "conformance", "--json", "--games", "60", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_a_solver_strategy_written_here_is_reported_caught_and_unprofitable():
    code, result = conformance("--behaviour", f"{HERE}:late_optimizer_flip")
    [report] = result["behaviours"]
    assert (code, result["passed"]) == (0, True)
    assert report["name"] == "late-optimizer-flip" and report["role"] == "solver"
    assert report["games"] > 0 and report["games_lost"] == report["games"]
    # sampled 1 of 20 segments; a chunk-3 flip is invisible in the stand-in states of <= 3 chunks
    assert report["caught"] and 0.045 < report["catch_rate"] <= 1 / 20
    assert not report["profitable"] and report["gain_over_honest"] < 0
    assert report["failures"] == {}  # pinned at step end, chunk 3, every time


def test_a_verifier_strategy_written_here_is_reported_profitable_without_forced_errors():
    code, result = conformance("--behaviour", f"{HERE}:sleepy_auditor", "--forced-error-rate", "0")
    [report] = result["behaviours"]
    assert (code, result["passed"]) == (1, False)
    assert report["profitable"] and report["gain_over_honest"] > 0
    assert report["catch_rate"] == 0
    code, result = conformance("--behaviour", f"{HERE}:sleepy_auditor")  # the default φ = 0.1
    assert code == 0 and result["behaviours"][0]["catch_rate"] == pytest.approx(0.1)


def test_the_pins_of_a_strategy_are_checked_against_its_own_divergence():
    report = run_conformance(late_optimizer_flip, Market(), games=40)
    assert report.passed and "first divergence pinned" not in report.failures


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--behaviour", "no-such-behaviour"], "unknown behaviour 'no-such-behaviour'"),
        (["--behaviour", "os:path"], "is not a verifier behaviour"),
        (["--behaviour", "no_such_module:thing"], "cannot load"),
        (["--behaviour", "honest", "--sampled", "99"], "sampled <= segments"),
        (["--behaviour", "honest", "--stake-margin", "nan"], "finite"),
        (["--behaviour", "honest", "--segments", "1000000000"], "segments <= 100000"),
        (["--behaviour", "honest", "--forced-error-rate", "nan"], "[0, 1]"),
        ([], "name a --behaviour"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 2 and words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
