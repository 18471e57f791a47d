"""An adaptive solver that forges everything but segment 0 is caught at any seed it could have
chosen (issue 11), end to end: a real coordinator subprocess with a fixed signing key, a real
solver daemon running `--behaviour honest-first-segment`, a real honest verifier daemon.

Before the fix the selection seed hashed the solver's signature and the log head in, so such a
solver re-rolled ed25519 nonces (about 21 tries for 20 segments) until the draw fell on segment 0,
the one segment it trained. Now the seed is H(beacon ‖ commitment bytes): with the coordinator's
key fixed the draw is fixed by the commitment, it is not segment 0, the verifier's replay
disagrees, the solver loses the dispute and is slashed, and the audit recomputes the draw. Then,
in process, 20 re-signed copies of the very same commitment (each a valid signature, all
different) give the logged seed and segments every time: there was nothing to re-roll.
"""

import hashlib
import json

import pytest
from nacl.signing import SigningKey

from cli.audit_cmd import check_coordinator
from coordinator.clock import Clock
from coordinator.jobs.service import compute_job_beacon
from coordinator.runtime import Runtime
from coordinator.settings import tiny_preset
from protocol.presets import example_job_spec_json
from protocol.sampling import (
    compute_beacon_commitment,
    compute_segment_choice,
    compute_selection_seed,
)
from protocol.signing import DOMAIN_COMMITMENT, compute_signing_digest, is_valid_signature
from protocol.spec import compute_checkpoint_steps, compute_job_id, parse_job_spec
from protocol.trajectory import Commitment
from protocol.wire import DisputeStatus, JobState
from sdk.client import CoordinatorClient
from tests.coordinator.test_unsteerable_audit import sign_with_nonce
from tests.daemons.test_daemons import Market, _key, start_registered_verifier, wait_until

pytestmark = pytest.mark.slow

# A fixed coordinator key (not a placeholder) makes the beacon, hence the draw for the solver's
# (deterministic: a pinned profile) commitment, fixed too. With this key the draw is segment 3
# of 4 (seed 402f2647…), not 0.
COORDINATOR_KEY_HEX = "6c1f3e9a0b7d25c48e1a9f6037b2d4c5e8f90a1b2c3d4e5f60718293a4b5c6d7"
INTERVAL, STEPS = 5, 20  # 4 segments: 0 trained honestly, 1–3 copied forward
# The stake meets the stake rule S ≥ 5/3·P/k for P = bounty − fee = 950 and k = 1.
BOUNTY, FEE, PRICE, STAKE, FUNDS = 1000, 50, 600, 1600, 10_000
RE_ROLLS = 20


@pytest.fixture
def market(tmp_path, monkeypatch):
    # Market.start_coordinator passes os.environ on; the hex key wins over its --key-file.
    monkeypatch.setenv("VERITRAIN_SIGNING_KEY_HEX", COORDINATOR_KEY_HEX)
    m = Market(tmp_path)
    yield m
    m.close()


def _log(client: CoordinatorClient, job_id: str) -> list[dict]:
    entries = [json.loads(e.body) for e in client.iter_log_entries(client.get_tree_head().size)]
    return [e for e in entries if (e.get("data") or {}).get("job_id") == job_id]


def _one(entries: list[dict], kind: str) -> dict:
    [found] = [e["data"] for e in entries if e["kind"] == kind]
    return found


def test_forging_all_but_segment_0_is_caught_at_any_seed_it_could_choose(market):
    market.start_coordinator()
    submitter = market.party("submitter")
    market.party("solver")
    market.party("verifier")
    spec = example_job_spec_json("mlp", steps=STEPS)
    spec["checkpoint_interval"] = INTERVAL
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    total_segments = len(compute_checkpoint_steps(parse_job_spec(spec))) - 1
    assert total_segments >= 4

    verifier_key = start_registered_verifier(market, submitter)
    solver_signing_key = _key(market, "solver")
    solver_key = bytes(solver_signing_key.verify_key).hex()
    market.daemon(
        "solver",
        "solver",
        *("--price", str(PRICE), "--stake", str(STAKE), "--only-job", job_id),
        *("--behaviour", "honest-first-segment"),
    )
    submitter.submit_job(  # num_segments=1: one segment of the 4 is replayed
        spec, BOUNTY, min_stake=STAKE, verifier_fee=FEE, num_segments=1, bidding_s=3
    )

    ruled = wait_until(
        lambda: submitter.list_disputes(party=verifier_key, status=DisputeStatus.RULED),
        180,
        "the ruling",
    )
    wait_until(lambda: submitter.get_job(job_id).state is JobState.FAILED, 60, "the job to fail")
    log = _log(submitter, job_id)

    # The draw: fixed by the key and the commitment, and not the one segment trained honestly.
    committed = _one(log, "job.committed")
    [segment] = committed["segments"]
    assert segment != 0, "this key draws segment 0: pick another COORDINATOR_KEY_HEX"
    assert committed["verifiers"] == [verifier_key]
    beacon = bytes.fromhex(committed["beacon"])
    coordinator = SigningKey(bytes.fromhex(COORDINATOR_KEY_HEX))
    assert beacon == compute_job_beacon(Runtime(tiny_preset(), None, coordinator, Clock()), job_id)
    assert compute_beacon_commitment(beacon).hex() == _one(log, "job.awarded")["beacon_commitment"]

    # The verifier's replay disagrees with the solver's checkpoint at the segment's end.
    opened = _one(log, "dispute.opened")
    [end] = [
        e["data"]
        for e in log
        if e["kind"] == "checkpoint.uploaded" and e["data"]["index"] == segment + 1
    ]
    assert (opened["segment"], opened["verifier"]) == (segment, verifier_key)
    assert opened["root"] != end["state_root"]
    assert not [e for e in log if e["kind"] == "verification.agreed"]

    # The dispute pins the segment's first step (the first copied one); the solver loses.
    [dispute] = ruled
    assert (dispute.winner, dispute.segment) == ("verifier", segment)
    assert dispute.dispute_step == segment * INTERVAL
    slashed = _one(log, "job.solver_slashed")
    assert (slashed["solver"], slashed["slashed"]) == (solver_key, STAKE)
    assert submitter.get_job(job_id).state is JobState.FAILED
    assert submitter.get_balance(solver_key) == FUNDS - STAKE  # stake gone, nothing paid

    report = check_coordinator(submitter)
    assert report.ok, report.problems
    assert report.draws_checked >= 1

    # Nothing to re-roll: 20 more valid signatures over the same commitment, same seed and draw.
    commitment = Commitment.from_json(committed)
    content = commitment.encode()
    message = compute_signing_digest(DOMAIN_COMMITMENT, content)
    signatures = [
        sign_with_nonce(solver_signing_key, message, b"re-roll %d" % i) for i in range(RE_ROLLS)
    ]
    assert len({*signatures, bytes.fromhex(committed["signature"])}) == RE_ROLLS + 1
    for signature in signatures:
        assert is_valid_signature(bytes.fromhex(solver_key), DOMAIN_COMMITMENT, content, signature)
        seed = compute_selection_seed(beacon, content)  # no signature input to vary
        assert seed.hex() == committed["seed"]
        assert compute_segment_choice(seed, total_segments, 1) == [segment]

    # Whereas a seed that hashed the signature in (as VTSELECT1 did) moved with every re-roll,
    # and these same re-rolls reach segment 0 within a few tries.
    def old_draw(signature: bytes) -> list[int]:
        old_seed = hashlib.sha256(b"VTSELECT1" + content + signature).digest()
        return compute_segment_choice(old_seed, total_segments, 1)

    more = (sign_with_nonce(solver_signing_key, message, b"grind %d" % i) for i in range(200))
    assert any(old_draw(signature) == [0] for signature in [*signatures, *more])
