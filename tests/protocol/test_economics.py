"""Economics: closed forms, and the simulation's verdict that honesty pays and every deviation
costs money at stake ≤ 1× price and verification fraction ≤ 0.05."""

import json
import subprocess
import sys

import pytest

from protocol.behaviours import BUILTIN
from protocol.economics import (
    Market,
    compute_detection_probability,
    compute_jackpot,
    compute_required_stake,
    compute_slash_split,
    compute_summary,
    simulate_market,
)
from protocol.testing import assert_no_profitable_deviation


def test_closed_forms():
    assert compute_required_stake(600, 3) > 600 / 3
    assert compute_detection_probability(20, 0, 1) == 0
    assert compute_detection_probability(20, 20, 1) == 1
    assert compute_detection_probability(20, 10, 2) == pytest.approx(1 - (10 * 9) / (20 * 19))
    assert compute_jackpot(50, 0.1) >= 50 / 0.1
    assert sum(compute_slash_split(101)) == pytest.approx(101)


def test_every_deviation_loses_and_honesty_earns():
    market = Market()
    summary = compute_summary(market, simulate_market(market, trials=20, seed=1))
    assert summary["stake_multiple"] <= 1 and summary["verification_fraction"] <= 0.05
    by_name = {(s["role"], s["name"]): s for s in summary["strategies"]}
    assert len(by_name) == 16 and summary["ok"]
    for s in summary["strategies"]:
        assert (s["expected_profit"] > 0) if s["honest"] else (s["gain_over_honest"] < 0), s
    assert by_name[("solver", "skip-steps")]["catch_rate"] == 1.0
    assert by_name[("solver", "honest-on-some-segments")]["catch_rate"] == pytest.approx(0.5)


def test_without_sampling_skipping_work_pays():
    """The verdict is not decoration: with no segment replayed, skipping the work pays."""
    market = Market(sampled=0)
    summary = compute_summary(market, simulate_market(market, trials=10))
    skip = next(s for s in summary["strategies"] if s["name"] == "skip-steps")
    assert skip["gain_over_honest"] > 0 and skip["catch_rate"] == 0 and not summary["ok"]


def test_simulate_cli_prints_the_summary_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "simulate", "--json", "--trials", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"stake_multiple", "verification_fraction", "strategies"} <= set(summary)
    assert {"name", "role", "honest", "expected_profit", "catch_rate"} <= set(
        summary["strategies"][0]
    )


@pytest.mark.parametrize(
    "behaviour", [b for b in BUILTIN.values() if not b.honest], ids=lambda b: f"{b.role}-{b.name}"
)
def test_no_built_in_deviation_earns_more_than_honest_play(behaviour):
    """The same verdict through the kit's invariant, one behaviour at a time."""
    assert_no_profitable_deviation(behaviour, Market(), trials=50)


def test_the_profit_invariant_fails_where_the_market_is_broken():
    with pytest.raises(AssertionError, match="earns"):
        assert_no_profitable_deviation(BUILTIN[("solver", "skip-steps")], Market(sampled=0), 10)
