"""An adaptive solver cannot steer its own audit, nor plant its starting point (issue 11).

- The selection seed is a function of the commitment's content and the beacon the coordinator
  fixed at the award (only its hash public) alone: re-rolled ed25519 signatures (a signer may
  pick any nonce, and verification cannot tell), any number of heartbeats and unrelated log
  entries leave the drawn segments and verifiers exactly as they were.
- A trajectory that starts from another state than the spec's seeded initialisation is slashed
  at its commitment, before any verifier is drawn, with the evidence in the log.
- `veritrain audit` recomputes every draw from the log, and notices a forged one.
"""

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl import bindings
from nacl.signing import SigningKey
from safetensors.torch import save

from cli.audit_cmd import check_coordinator
from coordinator import transitions
from coordinator.clock import Clock
from coordinator.db import Database, upgrade_database
from coordinator.jobs import service as jobs
from coordinator.jobs.schemas import BidRequest, CommitmentRequest, SubmitJobRequest
from coordinator.ledger.accounts import MINT_ACCOUNT, available
from coordinator.ledger.service import process_movement, transfer
from coordinator.models import Assignment, Job
from coordinator.runtime import Runtime
from coordinator.settings import tiny_preset
from coordinator.verification.schemas import RegisterVerifierRequest
from coordinator.verification.service import process_register_verifier
from protocol.job_files import collect_job_files
from protocol.sampling import compute_beacon_commitment, compute_selection_seed
from protocol.signing import DOMAIN_COMMITMENT, compute_signing_digest, is_valid_signature
from protocol.spec import compute_checkpoint_steps, compute_job_id, parse_job_spec
from protocol.state import compute_layout_bytes
from protocol.training import build_program, compute_initial_state_root
from protocol.trajectory import (
    Commitment,
    compute_trajectory_proof,
    compute_trajectory_root,
    sign_commitment,
)
from protocol.types import JobId, Root
from protocol.wire import JobState
from sdk.responses import CoordinatorError
from tests.coordinator.market import funded, tiny_spec_json
from tests.coordinator.server import client_factory, running_server

COORDINATOR_SEED = bytes(range(32))
SOLVER_KEY = SigningKey(b"\x05" * 32)
SUBMITTER = "5b" * 32
VERIFIERS = {f"{i:02x}" * 32: 100 + 37 * i for i in range(1, 7)}  # key → standing stake
SPEC = {**tiny_spec_json(), "steps": 8}  # 8 segments
NUM_SEGMENTS, NUM_VERIFIERS = 2, 2


def _fixed_trajectory(spec: dict, first_root: bytes | None = None) -> list:
    """The spec's true checkpoint 0 (or `first_root`), then fixed made-up roots."""
    start = first_root or bytes(compute_initial_state_root(parse_job_spec(spec)))
    steps = compute_checkpoint_steps(parse_job_spec(spec))
    return [(steps[0], Root(start))] + [
        (step, Root(hashlib.sha256(b"forged %d" % step).digest())) for step in steps[1:]
    ]


ENTRIES = _fixed_trajectory(SPEC)
JOB_ID = compute_job_id(parse_job_spec(SPEC)).hex()
COMMITMENT = Commitment(
    JobId(bytes.fromhex(JOB_ID)), compute_trajectory_root(ENTRIES), len(ENTRIES), Root(b"\x0f" * 32)
)


def sign_with_nonce(key: SigningKey, message: bytes, nonce: bytes) -> bytes:
    """An ed25519 signature with a nonce of our choosing: as valid as the deterministic one
    (RFC 8032 verification cannot tell which nonce a signer used)."""
    digest = hashlib.sha512(bytes(key)).digest()
    scalar = bytearray(digest[:32])
    scalar[0] &= 248
    scalar[31] = (scalar[31] & 127) | 64
    a = bindings.crypto_core_ed25519_scalar_reduce(bytes(scalar) + bytes(32))
    public = bytes(key.verify_key)
    r = bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha512(nonce + message).digest())
    big_r = bindings.crypto_scalarmult_ed25519_base_noclamp(r)
    k = bindings.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(big_r + public + message).digest()
    )
    s = bindings.crypto_core_ed25519_scalar_add(r, bindings.crypto_core_ed25519_scalar_mul(k, a))
    return big_r + s


def _mint(session, rt, owner: str, amount: int) -> None:
    process_movement(session, rt, "test.mint", {}, transfer(MINT_ACCOUNT, available(owner), amount))


def _draw_after(heartbeats: int, noise: int, nonce: bytes | None) -> tuple[str, list, list]:
    """A fresh coordinator (same key), the same job and commitment, a different history:
    `noise` unrelated log entries, `heartbeats` heartbeats, a signature with `nonce` (None: the
    deterministic one). Returns (seed, segments, verifiers) as the coordinator drew them."""
    solver = bytes(SOLVER_KEY.verify_key).hex()
    message = compute_signing_digest(DOMAIN_COMMITMENT, COMMITMENT.encode())
    signature = (
        sign_with_nonce(SOLVER_KEY, message, nonce)
        if nonce
        else sign_commitment(SOLVER_KEY, COMMITMENT)
    )
    assert is_valid_signature(
        bytes.fromhex(solver), DOMAIN_COMMITMENT, COMMITMENT.encode(), signature
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'c.db'}")
        upgrade_database(db.engine)
        rt = Runtime(tiny_preset(), db, SigningKey(COORDINATOR_SEED), Clock())
        try:
            db.write(lambda s: _register_and_post(s, rt, solver, noise))
            rt.clock.offset_s += 61  # bidding closed
            db.write(lambda s: jobs.process_award(s, rt, JOB_ID))
            for _ in range(heartbeats):
                db.write(lambda s: jobs.process_heartbeat(s, rt, solver, JOB_ID))
            request = CommitmentRequest(
                commitment=COMMITMENT.to_json(),
                signature=signature.hex(),
                initial_state_root=ENTRIES[0][1].hex(),
                initial_proof=[h.hex() for h in compute_trajectory_proof(ENTRIES, 0)],
            )
            db.write(lambda s: transitions.process_commitment(s, rt, solver, JOB_ID, request))
            with db.read() as session:
                job = session.query(Job).filter_by(job_id=JOB_ID).one()
                rows = session.query(Assignment).filter_by(job_id=JOB_ID).all()
                return (
                    job.selection_seed,
                    sorted({a.segment for a in rows}),
                    sorted({a.verifier for a in rows}),
                )
        finally:
            db.dispose()


def _register_and_post(session, rt, solver: str, noise: int) -> None:
    for key, amount in VERIFIERS.items():
        _mint(session, rt, key, amount)
        req = RegisterVerifierRequest(profiles=[parse_job_spec(SPEC).profile.label], stake=amount)
        process_register_verifier(session, rt, key, req)
    for i in range(noise):
        _mint(session, rt, f"{i:064x}", 1)
    _mint(session, rt, SUBMITTER, 10_000)
    _mint(session, rt, solver, 10_000)
    request = SubmitJobRequest(
        spec=SPEC,
        bounty=1000,
        num_segments=NUM_SEGMENTS,
        num_verifiers=NUM_VERIFIERS,
        verifier_fee=10,  # a bond of 10 × 10: every verifier below qualifies
        bidding_s=60,
    )
    jobs.process_submit(session, rt, SUBMITTER, request)
    profile = parse_job_spec(SPEC).profile.label
    jobs.process_bid(
        session, rt, solver, JOB_ID, BidRequest(price=500, stake=1000, profile=profile)
    )


BASELINE = {}


def _baseline() -> tuple[str, list, list]:
    if not BASELINE:
        BASELINE["draw"] = _draw_after(0, 0, None)
    return BASELINE["draw"]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    heartbeats=st.integers(0, 4),
    noise=st.integers(0, 6),
    nonce=st.one_of(st.none(), st.binary(min_size=8, max_size=32)),
)
def test_signatures_heartbeats_and_history_cannot_move_the_draw(heartbeats, noise, nonce):
    seed, segments, verifiers = _baseline()
    assert len(segments) == NUM_SEGMENTS and len(verifiers) == NUM_VERIFIERS
    assert _draw_after(heartbeats, noise, nonce) == (seed, segments, verifiers)


def test_the_seed_is_the_revealed_beacon_over_the_commitment_content():
    seed, _, _ = _baseline()
    beacon = jobs.compute_job_beacon(
        Runtime(tiny_preset(), None, SigningKey(COORDINATOR_SEED), Clock()), JOB_ID
    )
    assert seed == compute_selection_seed(beacon, COMMITMENT.encode()).hex()
    other = Commitment(COMMITMENT.job_id, Root(b"\x01" * 32), len(ENTRIES), Root(b"\x0f" * 32))
    assert compute_selection_seed(beacon, other.encode()).hex() != seed  # content moves it
    assert compute_beacon_commitment(beacon) != beacon  # the award shows only the hash


# --- over HTTP: planted checkpoint 0, and the audit of every draw ------------------------------


def _awarded(make_client, spec: dict, num_verifiers: int = 1):
    submitter, solver, verifier = (funded(make_client) for _ in range(3))
    profile = parse_job_spec(spec).profile.label
    verifier.register_verifier([profile], 500)
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    submitter.submit_job(
        spec, 1000, min_stake=400, verifier_fee=50, num_verifiers=num_verifiers, bidding_s=30
    )
    solver.bid(job_id, 600, 400, profile)
    solver.advance_clock(31)
    solver.award(job_id)
    return submitter, solver, verifier, job_id


def _commit(solver, job_id: str, entries: list) -> None:
    commitment = Commitment(
        JobId(bytes.fromhex(job_id)),
        compute_trajectory_root(entries),
        len(entries),
        Root(b"\x0f" * 32),
    )
    solver.commit(
        job_id,
        commitment.to_json(),
        sign_commitment(solver.key, commitment),
        entries[0][1],
        compute_trajectory_proof(entries, 0),
    )


def test_a_planted_checkpoint_0_is_slashed_at_the_commitment(server, make_client):
    spec = tiny_spec_json(seed=7)
    submitter, solver, verifier, job_id = _awarded(make_client, spec)
    planted = bytes(compute_initial_state_root(parse_job_spec(tiny_spec_json(seed=8))))
    _commit(solver, job_id, _fixed_trajectory(spec, first_root=planted))  # another init
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.FAILED, "planted_initial_state")
    assert verifier.get_assignments() == []  # no verification, no game
    assert solver.get_balance() == 10_000 - 400  # its stake is gone
    entries = [
        json.loads(e.body) for e in submitter.iter_log_entries(submitter.get_tree_head().size)
    ]
    [evidence] = [e["data"] for e in entries if e["kind"] == "job.planted_initial_state"]
    assert evidence["initial_state_root"] == planted.hex()
    assert evidence["expected_initial_state_root"] != planted.hex()
    assert check_coordinator(submitter).ok


def test_a_fine_tuning_solver_that_starts_from_other_weights_is_slashed(server, make_client):
    """A spec naming initial weights: checkpoint 0 must be exactly them. A solver that starts
    from the seeded initialisation instead (cheaper than fetching a large file, or a model of its
    own) is slashed at its commitment, like any planted start."""
    base = tiny_spec_json(seed=21)
    params = build_program(parse_job_spec(base)).initial_state()
    weights = save({k[len("param/") :]: v * 0.5 for k, v in params.items() if "param/" in k})
    spec = {**base, "model": {**base["model"], "weights": hashlib.sha256(weights).hexdigest()}}
    submitter, solver, verifier = (funded(make_client) for _ in range(3))
    with pytest.raises(CoordinatorError) as not_yet:  # the file comes first
        submitter.submit_job(spec, 1000, min_stake=400, verifier_fee=50, bidding_s=30)
    assert "PUT /v1/datasets/" in not_yet.value.problem["detail"]
    submitter.upload_dataset(weights)
    profile = parse_job_spec(spec).profile.label
    verifier.register_verifier([profile], 500)
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    submitter.submit_job(spec, 1000, min_stake=400, verifier_fee=50, bidding_s=30)
    solver.bid(job_id, 600, 400, profile)
    solver.advance_clock(31)
    solver.award(job_id)
    seeded = bytes(compute_initial_state_root(parse_job_spec(base)))
    _commit(solver, job_id, _fixed_trajectory(spec, first_root=seeded))
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.FAILED, "planted_initial_state")
    assert solver.get_balance() == 10_000 - 400
    given = compute_initial_state_root(parse_job_spec(spec), collect_job_files([weights]))
    entries = [
        json.loads(e.body) for e in submitter.iter_log_entries(submitter.get_tree_head().size)
    ]
    [evidence] = [e["data"] for e in entries if e["kind"] == "job.planted_initial_state"]
    assert evidence["expected_initial_state_root"] == bytes(given).hex() != seeded.hex()


def test_a_proof_that_does_not_open_leaf_0_is_refused(server, make_client):
    spec = tiny_spec_json(seed=9)
    _, solver, _, job_id = _awarded(make_client, spec)
    entries = _fixed_trajectory(spec)
    commitment = Commitment(
        JobId(bytes.fromhex(job_id)),
        compute_trajectory_root(entries),
        len(entries),
        Root(b"\x0f" * 32),
    )
    from sdk.client import CoordinatorError

    with pytest.raises(CoordinatorError) as refused:
        solver.commit(
            job_id,
            commitment.to_json(),
            sign_commitment(solver.key, commitment),
            entries[1][1],  # a real leaf, but not leaf 0
            compute_trajectory_proof(entries, 1),
        )
    assert (refused.value.status, refused.value.problem.get("field")) == (422, "initial_proof")
    assert solver.get_job(job_id).state == JobState.AWARDED  # nothing happened


def test_audit_recomputes_every_draw_and_catches_a_forged_one(server, make_client, monkeypatch):
    spec = tiny_spec_json(seed=11)
    submitter, solver, _, job_id = _awarded(make_client, spec)
    _commit(solver, job_id, _fixed_trajectory(spec))
    report = check_coordinator(submitter)
    assert report.ok and report.draws_checked == 1

    from protocol import sampling

    honest = sampling.compute_segment_choice
    monkeypatch.setattr(  # what a coordinator that bends the draw would publish
        "coordinator.verification.service.compute_segment_choice",
        lambda seed, total, count, *last: [
            (s + 1) % total for s in honest(seed, total, count, *last)
        ],
    )
    spec2 = tiny_spec_json(seed=12)
    submitter2, solver2, _, job_id2 = _awarded(make_client, spec2)
    _commit(solver2, job_id2, _fixed_trajectory(spec2))
    report = check_coordinator(submitter2)
    assert not report.ok
    assert any("segments or verifiers differ" in p for p in report.problems)


def test_a_large_jobs_checkpoint_0_is_built_in_a_worker_and_still_catches_a_plant(tmp_path):
    """Above max_in_process_bytes the replica builds no state: a worker process computes
    checkpoint 0's root, which still accepts the honest start and slashes a planted one."""
    with (
        running_server("sqlite", tmp_path, max_in_process_bytes=0) as srv,
        client_factory(srv.url) as make,
    ):
        honest = tiny_spec_json(seed=11)
        _, solver, verifier, job_id = _awarded(make, honest)
        _commit(solver, job_id, _fixed_trajectory(honest))
        assert solver.get_job(job_id).state is JobState.VERIFYING
        assert len(verifier.get_assignments()) == 1
        # the worker that computed the root: the replica built no state of its own
        assert len(srv.app.state.runtime.referee_workers.workers) == 1

        planted_spec = tiny_spec_json(seed=12)
        _, solver, _, job_id = _awarded(make, planted_spec)
        planted = bytes(compute_initial_state_root(parse_job_spec(tiny_spec_json(seed=13))))
        _commit(solver, job_id, _fixed_trajectory(planted_spec, first_root=planted))
        job = solver.get_job(job_id)
        assert (job.state, job.outcome) == (JobState.FAILED, "planted_initial_state")


def test_a_verifier_is_never_drawn_for_a_state_beyond_its_declared_memory(server, make_client):
    """A hostile submitter cannot get a verifier penalised by posting a job beyond the memory
    it declared: the draw passes it over (six small verifiers, two that take the state), and
    the audit recomputes the draw with the capacities the registrations logged."""
    spec = tiny_spec_json(seed=21)
    state_bytes = compute_layout_bytes(build_program(parse_job_spec(spec)).state_layout())
    profile = parse_job_spec(spec).profile.label
    for nonsense in (0, -1, 2**63):  # a bound must be a positive byte count
        with pytest.raises(CoordinatorError) as refused:
            funded(make_client).register_verifier([profile], 500, max_state_bytes=nonsense)
        assert refused.value.status == 422, nonsense
    small = [funded(make_client) for _ in range(6)]
    for verifier in small:
        verifier.register_verifier([profile], 500, max_state_bytes=state_bytes - 1)
    roomy = funded(make_client).register_verifier([profile], 500, max_state_bytes=state_bytes)
    assert roomy.max_state_bytes == state_bytes  # the answer says what was declared
    submitter, solver, _, job_id = _awarded(make_client, spec, num_verifiers=2)
    _commit(solver, job_id, _fixed_trajectory(spec))
    log = [json.loads(e.body) for e in submitter.iter_log_entries(submitter.get_tree_head().size)]
    [committed] = [e["data"] for e in log if e["kind"] == "job.committed"]
    [submitted] = [e["data"] for e in log if e["kind"] == "job.submitted"]
    registered = [e["data"] for e in log if e["kind"] == "verifier.registered"]
    assert submitted["state_bytes"] == state_bytes
    assert sorted(r["max_state_bytes"] or 0 for r in registered)[-1] == state_bytes
    assert len(committed["verifiers"]) == 2  # both that take the state, none of the six
    assert not set(committed["verifiers"]) & {v.public_key for v in small}
    assert all(v.get_assignments() == [] for v in small)
    assert check_coordinator(submitter).ok
