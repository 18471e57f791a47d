"""Job terms with teeth (issue 11): at submission the coordinator derives an omitted fee and minimum
stake from the economics, and refuses terms that break the incentive inequalities with a 422
naming the field. Run against the default margin (5/3), not the tiny preset's small one."""

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.assurance import (
    STAKE_MARGIN,
    compute_default_verifier_fee,
    compute_min_solver_stake,
)
from protocol.economics import compute_detection_probability, compute_max_price
from sdk.client import CoordinatorClient, CoordinatorError
from tests.coordinator.market import tiny_spec_json
from tests.coordinator.server import running_server

SPEC = {**tiny_spec_json(seed=51), "steps": 20}  # 20 segments


@pytest.fixture
def strict_server(backend, tmp_path):
    with running_server(backend, tmp_path, stake_margin=5 / 3, min_verifier_fee=1) as server:
        yield server


@pytest.fixture
def submitter(strict_server):
    from nacl.signing import SigningKey

    with CoordinatorClient(strict_server.url, SigningKey.generate()) as client:
        client.faucet(100_000)
        yield client


def _submitted(client) -> dict:
    size = client.get_tree_head().size
    return json.loads(client.get_log_entries(size - 1, 1)[0].body)["data"]


def _refused(call) -> tuple[int, str | None, str]:
    with pytest.raises(CoordinatorError) as refused:
        call()
    return refused.value.status, refused.value.problem.get("field"), refused.value.problem["detail"]


def test_omitted_terms_are_derived_from_the_economics(submitter):
    job = submitter.get_job(submitter.submit_job(SPEC, 1000).job_id)
    assert job.verifier_fee == compute_default_verifier_fee(1000, 1, 20, 1, 1) == 76
    assert job.min_stake == math.ceil(Fraction(5, 3) * (1000 - 76)) == 1540
    assert _submitted(submitter)["min_stake"] == 1540


def test_a_stake_below_the_rule_is_422_saying_what_it_must_be(submitter):
    status, field, detail = _refused(
        lambda: submitter.submit_job(SPEC, 1000, min_stake=400, verifier_fee=50)
    )
    assert (status, field) == (422, "min_stake")
    assert "at least 1584" in detail  # ceil(5/3 · 950 / 1)
    assert submitter.get_balance() == 100_000  # nothing moved
    job_id = submitter.submit_job(SPEC, 1000, min_stake=1584, verifier_fee=50).job_id
    assert submitter.get_job(job_id).min_stake == 1584


def test_more_replayed_segments_need_less_stake(submitter):
    job_id = submitter.submit_job(SPEC, 1000, verifier_fee=50, assurance="high").job_id
    job = submitter.get_job(job_id)
    assert (job.num_segments, job.num_verifiers) == (10, 2)
    assert job.min_stake == math.ceil(Fraction(5, 3) * (1000 - 2 * 50) / 10) == 150


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"verifier_fee": 0}, "verifier_fee"),  # a verified job pays its verifiers
        ({"verifier_fee": 1000}, "bounty"),  # the fees leave no price for the solver
    ],
)
def test_terms_that_break_the_incentives_are_refused(submitter, terms, field):
    assert _refused(lambda: submitter.submit_job(SPEC, 1000, **terms))[:2] == (422, field)


def test_an_unverified_job_is_the_submitters_choice_and_says_so(submitter):
    job_id = submitter.submit_job(SPEC, 1000, num_verifiers=0).job_id
    job = submitter.get_job(job_id)
    assert (job.verifier_fee, job.min_stake) == (0, 0)
    assert _submitted(submitter)["single_step_survival"] == 1.0


@given(
    total=st.integers(1, 64),
    data=st.data(),
    max_price=st.integers(1, 10**9),
)
def test_the_derived_stake_makes_every_fake_lose(total, data, max_price):
    """Faking `bad` of n segments saves at most bad/n of the compute cost C ≤ P and is caught
    with the exact sampling odds; with S = ceil(5/3·P/k) the expected gain is negative."""
    sampled = data.draw(st.integers(1, total))
    bad = data.draw(st.integers(1, total))
    stake = compute_min_solver_stake(max_price, sampled, STAKE_MARGIN)
    caught = compute_detection_probability(total, bad, sampled)
    saved = Fraction(bad, total) * max_price  # C = P: the most a rational solver can spend
    assert saved - Fraction(caught) * (max_price + stake) < 0


@given(
    bounty=st.integers(1, 10**9),
    total=st.integers(1, 64),
    verifiers=st.integers(1, 8),
    data=st.data(),
)
def test_the_default_fee_leaves_a_price_and_pays_the_replay(bounty, total, verifiers, data):
    sampled = data.draw(st.integers(1, total))
    fee = compute_default_verifier_fee(bounty, sampled, total, verifiers, 0)
    price = compute_max_price(bounty, fee, verifiers)
    assert price >= 0
    # the fee pays a replay of k/n of the price's compute with its markup, up to the rounding
    # of one fee (its floor, which also raises the price by up to one fee per verifier)
    share = Fraction(5, 3) * Fraction(sampled, total)
    assert fee + 1 + share * verifiers >= share * price


def test_only_verifiers_holding_the_jobs_bond_are_drawn_and_the_audit_agrees(strict_server):
    """The bond is fixed at submission (10 × the fee here: 500) and logged; a verifier one unit
    short is never drawn, and `veritrain audit` recomputes the draw with the logged bond."""
    from nacl.signing import SigningKey

    from cli.audit_cmd import check_coordinator
    from protocol.spec import parse_job_spec
    from tests.coordinator.market import commit_untrained

    spec = tiny_spec_json(seed=52)
    profile = parse_job_spec(spec).profile.label
    clients = [CoordinatorClient(strict_server.url, SigningKey.generate()) for _ in range(4)]
    submitter, solver, short, bonded = clients
    try:
        for client in clients:
            client.faucet(100_000)
        short.register_verifier([profile], 499)
        bonded.register_verifier([profile], 500)
        job_id = submitter.submit_job(
            spec, 1000, verifier_fee=50, num_verifiers=2, bidding_s=30
        ).job_id
        job = submitter.get_job(job_id)
        assert job.verifier_bond == 500 == _submitted(submitter)["verifier_bond"]
        solver.bid(job_id, 600, job.min_stake, profile)
        solver.advance_clock(31)
        solver.award(job_id)
        commit_untrained(solver, spec, job.num_checkpoints)
        assert {a.verifier for a in submitter.get_job_assignments(job_id)} == {bonded.public_key}
        with pytest.raises(CoordinatorError) as refused:
            short.challenge_segment(job_id, 0)
        assert refused.value.status == 403 and "500" in refused.value.problem["detail"]
        assert check_coordinator(submitter).ok
    finally:
        for client in clients:
            client.close()
