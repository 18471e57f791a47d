"""Assurance levels: sampling plans are monotone and exact, the cost to corrupt a model grows with
detection, and the simulator reports every level with every deviation still losing money."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.assurance import (
    ASSURANCE_LEVELS,
    DEFAULT_ASSURANCE,
    compute_cost_to_corrupt,
    compute_required_stake,
    compute_required_stake_for_plan,
    compute_sampling_plan,
)
from protocol.economics import Market, compute_summary, simulate_market
from protocol.errors import InvalidInput

segments = st.integers(min_value=1, max_value=10_000)
detections = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)
money = st.floats(min_value=0, max_value=1e9, allow_nan=False)


def test_built_in_levels():
    assert list(ASSURANCE_LEVELS) == ["basic", "standard", "high", "full"]
    assert DEFAULT_ASSURANCE == "basic"
    plan = compute_sampling_plan(20)
    assert plan.level == "basic" and (plan.num_segments, plan.num_verifiers) == (1, 1)
    assert plan.verification_fraction == 0.05
    full = compute_sampling_plan(20, level="full")
    assert full.num_segments == 20 and full.num_verifiers == 2 and full.single_step_survival == 0


@given(segments)
def test_plans_are_monotone_in_the_level(n):
    plans = [compute_sampling_plan(n, level=name) for name in ASSURANCE_LEVELS]
    for lower, higher in zip(plans, plans[1:], strict=False):
        assert lower.num_segments <= higher.num_segments
        assert lower.num_verifiers <= higher.num_verifiers
        assert lower.detection_probability <= higher.detection_probability
        assert lower.single_step_survival >= higher.single_step_survival
        assert lower.verification_fraction <= higher.verification_fraction


@given(segments, detections, st.integers(min_value=1, max_value=5))
def test_plan_is_exact_and_meets_its_target(n, detection, verifiers):
    plan = compute_sampling_plan(n, detection=detection, num_verifiers=verifiers)
    k = plan.num_segments
    assert 1 <= k <= n and plan.total_segments == n and plan.level is None
    assert plan.detection_probability == k / n
    assert plan.single_step_survival == 1 - k / n
    assert plan.verification_fraction == verifiers * k / n
    assert plan.detection_probability >= detection - 1e-9
    if k > 1:  # the fewest segments that do: one fewer misses the target
        assert (k - 1) / n < detection


@given(segments, st.sampled_from(list(ASSURANCE_LEVELS)))
def test_levels_meet_their_targets(n, name):
    plan = compute_sampling_plan(n, level=name)
    assert plan.num_segments <= n
    assert plan.detection_probability >= ASSURANCE_LEVELS[name].detection - 1e-9
    assert plan.num_verifiers == ASSURANCE_LEVELS[name].num_verifiers


@given(segments, detections, detections, money, money)
def test_cost_to_corrupt_increases_with_detection(n, d1, d2, price, stake):
    low, high = sorted((d1, d2))
    a = compute_sampling_plan(n, detection=low)
    b = compute_sampling_plan(n, detection=high)
    cost_a, cost_b = (compute_cost_to_corrupt(p, price, stake) for p in (a, b))
    if b.single_step_survival == 0:
        assert cost_b is None
    else:
        assert cost_a is not None and cost_b is not None and cost_a <= cost_b
        p = b.detection_probability
        assert cost_b == pytest.approx(p / (1 - p) * (price + stake))
    if a.num_segments < b.num_segments and cost_b is not None and price + stake >= 1:
        assert cost_a < cost_b


@given(segments)
def test_replaying_everything_makes_corruption_impossible(n):
    plan = compute_sampling_plan(n, detection=1.0)
    assert plan.single_step_survival == 0
    assert compute_cost_to_corrupt(plan, 1000, 1000) is None


def test_stake_for_a_plan_is_the_economics_rule():
    plan = compute_sampling_plan(20, level="standard")
    assert compute_required_stake_for_plan(plan, 600) == compute_required_stake(600, 5) == 200
    assert compute_required_stake_for_plan(plan, 600, margin=1) == 120


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"level": "platinum"}, "assurance"),
        ({"level": 3}, "assurance"),
        ({"level": "basic", "detection": 0.5}, "assurance"),
        ({"detection": 0}, "detection"),
        ({"detection": -0.1}, "detection"),
        ({"detection": 1.01}, "detection"),
        ({"detection": float("nan")}, "detection"),
        ({"detection": "0.5"}, "detection"),
        ({"detection": True}, "detection"),
        ({"num_verifiers": 0}, "verifiers"),
    ],
)
def test_invalid_inputs_name_the_field(kwargs, field):
    with pytest.raises(InvalidInput) as caught:
        compute_sampling_plan(20, **kwargs)
    assert caught.value.field == field and caught.value.message


@given(
    st.one_of(
        st.floats(allow_nan=True).filter(lambda d: not 0 < d <= 1),
        st.integers().filter(lambda d: d != 1),
    )
)
def test_any_detection_outside_the_unit_interval_raises(detection):
    with pytest.raises(InvalidInput) as caught:
        compute_sampling_plan(20, detection=detection)
    assert caught.value.field == "detection"


@given(st.integers(max_value=0))
def test_no_segments_raises(n):
    with pytest.raises(InvalidInput) as caught:
        compute_sampling_plan(n)
    assert caught.value.field == "segments"


def test_summary_reports_every_level_and_every_deviation_loses():
    market = Market()
    summary = compute_summary(market, simulate_market(market, trials=20))
    levels = {a["level"]: a for a in summary["assurance"]}
    assert list(levels) == list(ASSURANCE_LEVELS)
    assert levels[list(ASSURANCE_LEVELS)[-1]]["single_step_survival"] <= 0.01
    assert levels[DEFAULT_ASSURANCE]["verification_fraction"] <= 0.05
    assert levels[DEFAULT_ASSURANCE]["single_step_survival"] == pytest.approx(0.95)
    costs = [a["cost_to_corrupt"] for a in summary["assurance"] if a["cost_to_corrupt"] is not None]
    assert costs == sorted(costs) and costs
    names = {(d["role"], d["name"]) for d in summary["deviations"]}
    assert names == {(s["role"], s["name"]) for s in summary["strategies"] if not s["honest"]}
    for d in summary["deviations"]:
        assert d["gain_over_honest"] < 0, d
    assert summary["ok"]


def test_simulate_cli_json_carries_assurance_and_deviations():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "simulate", "--json", "--trials", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"assurance", "deviations", "strategies", "stake_multiple"} <= set(summary)
    assert [a["level"] for a in summary["assurance"]] == list(ASSURANCE_LEVELS)
    assert {"cost_to_corrupt", "single_step_survival", "verification_fraction"} <= set(
        summary["assurance"][0]
    )
    assert summary["deviations"] and all(d["gain_over_honest"] < 0 for d in summary["deviations"])


def test_simulate_cli_prints_the_assurance_table():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "simulate", "--trials", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert out.returncode == 0, out.stderr
    assert "assurance levels" in out.stdout
    for name in ASSURANCE_LEVELS:
        assert name in out.stdout
