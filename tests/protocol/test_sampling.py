"""Selection from a public seed: recomputable, stake-weighted, profile-gated, never the solver."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from protocol.sampling import (
    compute_eligible_verifiers,
    compute_segment_choice,
    compute_selection_seed,
    compute_verifier_choice,
)

REPRO = "repro:fo1:torch-2.13.0:float32"
PINNED = "pinned:torch-2.13.0:float32:t1:avx2"


def test_only_verifiers_of_the_profile_and_never_the_parties():
    candidates = [
        ("a", 5, [PINNED]),
        ("b", 5, [REPRO, PINNED]),
        ("solver", 9, [REPRO]),
        ("c", 1, [REPRO]),
    ]
    assert compute_eligible_verifiers(candidates, REPRO, ("solver", "submitter")) == [
        ("b", 5),
        ("c", 1),
    ]


def test_a_verifier_that_declared_less_memory_than_the_state_is_not_eligible():
    candidates = [("a", 5, [REPRO]), ("b", 5, [REPRO]), ("c", 5, [REPRO])]
    capacities = {"a": 999, "b": 1000}  # c declared nothing: no bound
    eligible = compute_eligible_verifiers(candidates, REPRO, (), 0, 1000, capacities)
    assert eligible == [("b", 5), ("c", 5)]
    assert compute_eligible_verifiers(candidates, REPRO, (), 0, 0, capacities) == [
        (k, 5) for k in "abc"
    ]


@given(st.binary(min_size=32, max_size=32), st.integers(1, 50), st.integers(0, 50))
def test_same_public_inputs_same_choice(seed, total, count):
    first = compute_segment_choice(seed, total, count)
    assert first == compute_segment_choice(seed, total, count)
    assert len(set(first)) == len(first) == min(total, count) and all(0 <= s < total for s in first)


def test_choice_follows_stake_and_the_seed():
    pool = [("heavy", 90), ("light", 10), ("broke", 0)]
    picks = Counter(
        compute_verifier_choice(compute_selection_seed(bytes([i]) * 32, b"commitment"), pool, 1)[0]
        for i in range(200)
    )
    assert picks["broke"] == 0 and picks["heavy"] > 150 and picks["light"] > 5
    a = compute_selection_seed(b"r" * 32, b"commitment")
    assert a != compute_selection_seed(b"r" * 32, b"commitment2")  # the content changes it
    assert a != compute_selection_seed(b"s" * 32, b"commitment")  # and so does the beacon


def test_forced_errors_follow_the_rate_and_the_seed():
    from protocol.sampling import (
        compute_forced_error_outcome,
        compute_planted_root,
        is_forced_error,
    )

    seed = compute_selection_seed(b"t" * 32, b"commitment")
    planted = sum(is_forced_error(seed, i, 100_000) for i in range(5000))
    assert 400 < planted < 600  # 10 %
    assert not any(is_forced_error(seed, i, 0) for i in range(1000))
    root = compute_planted_root(seed, 3)
    assert root == compute_planted_root(seed, 3) != compute_planted_root(seed, 4)
    true = b"\x01" * 32
    assert compute_forced_error_outcome(true, root, true, 500) == ("jackpot", 500)
    assert compute_forced_error_outcome(root, root, true, 500) == ("slash", 500)  # approved it
    made_up = b"\x02" * 32  # differs from the planted root, but nobody recomputed it
    assert compute_forced_error_outcome(made_up, root, true, 500) == ("slash", 500)
