"""Verifier and segment selection from a public seed (pure).

The seed is H(tag ‖ beacon ‖ commitment bytes). The beacon is a 32-byte secret the coordinator
fixes when it awards the job, publishing only H(beacon) (`compute_beacon_commitment`) in the
award's log entry, and reveals in the commitment's entry. The commitment bytes (`VTCOMMIT1` ‖ job
id ‖ trajectory root ‖ count ‖ final model root) are its canonical content: no signature, log
head or anything else the solver can vary for free goes in. So the solver cannot predict the
seed before it commits (it does not know the beacon), cannot re-roll it after (a job takes one
commitment), and anyone can recompute every draw from the log. Only verifiers registered for the job's execution profile label qualify (never the solver or the
submitter); they are drawn stake-weighted without replacement; segments uniformly without
replacement. A repro profile's label pins no threads or ISA, so any repro verifier qualifies.
"""

import hashlib
from collections.abc import Mapping, Sequence

SELECTION_TAG = b"VTSELECT2"  # 1 hashed the signature and log head in; both were grindable
BEACON_COMMIT_TAG = b"VTBEACON1"


def compute_eligible_verifiers(
    candidates: Sequence[tuple[str, int, Sequence[str]]],
    profile_label: str,
    excluded: Sequence[str],
    min_stake: int = 0,
    state_bytes: int = 0,
    capacities: Mapping[str, int | None] | None = None,
) -> list[tuple[str, int]]:
    """(key, stake) of candidates (key, stake, profile labels) that can replay this profile,
    hold at least the job's bond `min_stake`, and take a state of `state_bytes` (a verifier's
    declared capacity in `capacities`; none declared: no bound)."""
    capacities = capacities or {}
    return [
        (key, stake)
        for key, stake, profiles in candidates
        if profile_label in profiles
        and key not in excluded
        and stake >= min_stake
        and (capacities.get(key) is None or capacities[key] >= state_bytes)
    ]


def compute_beacon_commitment(beacon: bytes) -> bytes:
    """What the award publishes: binds the coordinator to the beacon before the solver commits."""
    return hashlib.sha256(BEACON_COMMIT_TAG + beacon).digest()


def compute_selection_seed(beacon: bytes, commitment_bytes: bytes) -> bytes:
    """`commitment_bytes` is `protocol.trajectory.Commitment.encode()`."""
    return hashlib.sha256(SELECTION_TAG + beacon + commitment_bytes).digest()


def compute_replacement_seed(selection_seed: bytes, missed_assignment_id: int) -> bytes:
    return hashlib.sha256(
        SELECTION_TAG + b"replace" + selection_seed + missed_assignment_id.to_bytes(8, "little")
    ).digest()


def _draw(seed: bytes, purpose: bytes, counter: int, bound: int) -> int:
    """Uniform integer in [0, bound) from (seed, purpose, counter); 256-bit draw, negligible bias."""
    digest = hashlib.sha256(seed + purpose + counter.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") % bound


def compute_verifier_choice(
    seed: bytes, candidates: Sequence[tuple[str, int]], count: int
) -> list[str]:
    """Up to `count` distinct candidates (key, stake>0), each draw weighted by stake."""
    pool = sorted((key, weight) for key, weight in candidates if weight > 0)
    chosen: list[str] = []
    for counter in range(min(count, len(pool))):
        total = sum(w for _, w in pool)
        point = _draw(seed, b"verifier", counter, total)
        for i, (key, weight) in enumerate(pool):
            if point < weight:
                chosen.append(key)
                pool.pop(i)
                break
            point -= weight
    return chosen


def compute_secret_segment(seed: bytes, num_segments_total: int, seen: set[int]) -> int | None:
    """One segment not in `seen` (sampled already, or its end is public), uniformly; None if
    every segment is seen. A replacement for a missed reveal replays it."""
    fresh = [s for s in range(num_segments_total) if s not in seen]
    return fresh[_draw(seed, b"secret-segment", 0, len(fresh))] if fresh else None


def compute_segment_choice(
    seed: bytes, num_segments_total: int, count: int, audit_last: bool = False
) -> list[int]:
    """`count` distinct segment indices out of `num_segments_total`, sorted. `audit_last`
    (a job whose final state carries its evaluation metrics): the last segment always, the
    other `count - 1` drawn from the rest, so a lie about the metrics is always replayed."""
    last = [num_segments_total - 1] if audit_last and num_segments_total and count else []
    remaining = list(range(num_segments_total - len(last)))
    picked = []
    for counter in range(min(count, num_segments_total) - len(last)):
        picked.append(remaining.pop(_draw(seed, b"segment", counter, len(remaining))))
    return sorted(picked + last)


# --- forced errors ---------------------------------------------------------------------------

FORCED_TAG = b"forced"


def is_forced_error(seed: bytes, assignment_index: int, rate_ppm: int) -> bool:
    """Whether the protocol plants a known-bad end root in this assignment (rate in parts per
    million), decided from the public seed so anyone can check it afterwards."""
    return _draw(seed, FORCED_TAG, assignment_index, 1_000_000) < rate_ppm


def compute_planted_root(seed: bytes, assignment_index: int) -> bytes:
    """The bogus end root shown to the verifier: no state has it (a fresh hash)."""
    return hashlib.sha256(
        SELECTION_TAG + FORCED_TAG + seed + assignment_index.to_bytes(8, "little")
    ).digest()


def compute_forced_error_outcome(
    revealed_root: bytes, planted_root: bytes, true_root: bytes, jackpot: int
) -> tuple[str, int]:
    """Only a verifier that recomputed earns the jackpot: its root is the true end root (which
    differs from the planted one). One that approves the planted root, or reveals anything else
    (a made-up root merely differs from the planted one), did not replay and loses as much."""
    recomputed = revealed_root == true_root != planted_root
    return ("jackpot", jackpot) if recomputed else ("slash", jackpot)
