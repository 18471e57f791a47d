"""Which checkpoints a committed job's solver uploads, and when (pure; docs/production.md,
"Checkpoint retention").

A solver keeps every checkpoint of a job on its own disk until the job is final, and uploads only
what someone needs: the start of each segment a verifier must replay, the end of each segment
whose verifiers have committed (they reveal against it, and a dispute starts from both), and the
final checkpoint — the submitter's model — once no verifier of the last segment still owes its
commit. A segment's end stays secret while any verifier of that segment has yet to commit, so
nobody can copy a root instead of replaying. The coordinator refuses every other upload; a
challenge adds a segment, and with it what is wanted, until the challenge window closes.
"""

from collections.abc import Iterable

from protocol.wire import AssignmentState

OWES_COMMIT = frozenset({AssignmentState.AWAITING_START, AssignmentState.ASSIGNED})


def compute_wanted_checkpoints(
    num_checkpoints: int, assignments: Iterable[tuple[int, AssignmentState]]
) -> set[int]:
    """The checkpoint indices that may and must be uploaded now, given (segment, state) of every
    assignment of the job; ones already stored stay in the set (uploading one again is a no-op)."""
    assignments = list(assignments)
    pending = {segment for segment, state in assignments if state in OWES_COMMIT}
    starts = {s for s, state in assignments if state == AssignmentState.AWAITING_START}
    ends = {s + 1 for s, state in assignments if state == AssignmentState.COMMITTED}
    ends.add(num_checkpoints - 1)
    return starts | {index for index in ends if index - 1 not in pending}
