"""Which checkpoints a solver uploads: only what a verifier, a dispute or the submitter needs,
and never a segment's end before all of that segment's verifiers have committed."""

from hypothesis import given
from hypothesis import strategies as st

from protocol.retention import OWES_COMMIT, compute_wanted_checkpoints
from protocol.wire import AssignmentState as A


def test_a_sampled_segment_wants_its_start_then_its_end_and_the_final_model_waits_its_turn():
    # 5 checkpoints (4 segments); segment 3 (the last) sampled, its verifier awaiting the start
    assert compute_wanted_checkpoints(5, [(3, A.AWAITING_START)]) == {3}
    assert compute_wanted_checkpoints(5, [(3, A.ASSIGNED)]) == set()  # replaying: end is secret
    assert compute_wanted_checkpoints(5, [(3, A.COMMITTED)]) == {4}
    # segment 1 sampled: the final model is wanted at once, checkpoints 1 and 2 as they fall due
    assert compute_wanted_checkpoints(5, [(1, A.AWAITING_START)]) == {1, 4}
    assert compute_wanted_checkpoints(5, [(1, A.COMMITTED)]) == {2, 4}
    assert compute_wanted_checkpoints(5, []) == {4}


def test_one_verifier_still_replaying_keeps_the_end_secret_from_the_other():
    assert compute_wanted_checkpoints(3, [(0, A.COMMITTED), (0, A.ASSIGNED)]) == {2}
    assert compute_wanted_checkpoints(3, [(0, A.COMMITTED), (0, A.COMMITTED)]) == {1, 2}


assignments = st.lists(st.tuples(st.integers(0, 6), st.sampled_from(list(A))), max_size=12)


@given(st.integers(2, 8), assignments)
def test_wanted_checkpoints_never_reveal_a_pending_segments_end(num_checkpoints, drawn):
    drawn = [(s % (num_checkpoints - 1), state) for s, state in drawn]
    wanted = compute_wanted_checkpoints(num_checkpoints, drawn)
    pending = {s for s, state in drawn if state in OWES_COMMIT}
    starts = {s for s, state in drawn if state == A.AWAITING_START}
    assert wanted <= set(range(num_checkpoints))
    assert starts <= wanted  # a verifier waiting for its start always gets it
    for index in wanted - starts:
        assert index - 1 not in pending  # an end is never shown to one still replaying
    assert (num_checkpoints - 1 in wanted) == (
        num_checkpoints - 2 not in pending or num_checkpoints - 1 in starts
    )
