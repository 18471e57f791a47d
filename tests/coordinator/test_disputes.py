"""Disputes ruled by the referee (a real worker step under the job's profile): the party whose
root the referee reproduces wins, the other is slashed, and the audit still agrees."""

import httpx
import pytest

from cli.audit_cmd import compute_audit
from protocol.state import compute_model_root, compute_state_root, decode_state, encode_state
from protocol.trajectory import Commitment, compute_trajectory_proof, compute_trajectory_root
from protocol.types import JobId, Root
from tests.coordinator.market import commit_signed, funded, train_tiny_job, verify_segment
from tests.coordinator.server import running_server

BOUNTY, FEE, STAKE, VSTAKE, PRICE = 1000, 50, 400, 500, 600


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_job(tmp_path_factory.mktemp("solver"))


@pytest.fixture
def sqlite_server(tmp_path):
    with running_server("sqlite", tmp_path) as server:
        yield server


@pytest.fixture
def make_client(sqlite_server):
    from nacl.signing import SigningKey

    from sdk.client import CoordinatorClient

    clients = []

    def make(key=None):  # the referee runs worker processes: allow for a loaded machine
        clients.append(CoordinatorClient(sqlite_server.url, key or SigningKey.generate(),
                                         timeout=httpx.Timeout(120, connect=5)))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def _start(make_client, trained, num_segments):
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    verifier.register_verifier([trained.profile], VSTAKE)
    submitter.submit_job(trained.spec_json, BOUNTY, min_stake=STAKE, verifier_fee=FEE,
                         num_verifiers=1, num_segments=num_segments, bidding_s=30)
    solver.bid(trained.job_id, PRICE, STAKE, trained.profile)
    solver.advance_clock(31)
    solver.award(trained.job_id)
    return submitter, solver, verifier


def _upload(solver, trained, index, data=None, proof=None):
    solver.upload_checkpoint(trained.job_id, index, index, data or trained.checkpoint_bytes(index),
                             proof or trained.proof(index))


def test_lying_verifier_loses_and_is_slashed(sqlite_server, make_client, trained):
    submitter, solver, verifier = _start(make_client, trained, 1)
    commit_signed(solver, trained)
    [a] = verifier.get_assignments()
    seg = a["segment"]
    _upload(solver, trained, seg)
    wrong = bytes(32)
    salt = verify_segment(verifier, a["id"], wrong)
    _upload(solver, trained, seg + 1)
    assert verifier.reveal_verification(a["id"], wrong, salt)["state"] == "disputed"
    solver.advance_clock(sqlite_server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id)["state"] == "verifying"  # an open dispute blocks settlement
    ruling = solver.rule_dispute(1)
    assert ruling["winner"] == "solver" and ruling["state"]["referee_root"] == trained.entries()[seg + 1][1].hex()
    assert verifier.get_account()["escrow_and_stakes"]["stake:"] == VSTAKE - STAKE
    solver.advance_clock(sqlite_server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id)["state"] == "settled"
    assert solver.get_balance() == 10_000 + PRICE + STAKE // 2
    assert submitter.get_balance() == 10_000 - PRICE  # the lying verifier is not paid
    report = compute_audit(solver)
    assert report.ok, report.problems


def _forged_trajectory(trained):
    """Honest checkpoints 0 and 1, a tampered checkpoint 2, and a commitment to them."""
    state = decode_state(trained.checkpoint_bytes(2))
    name = next(k for k in sorted(state) if k.startswith("param/"))
    state[name] = state[name] + 1e-3
    forged = encode_state(state)
    entries = trained.entries()[:2] + [(trained.entries()[2][0], compute_state_root(state))]
    commitment = Commitment(JobId(bytes.fromhex(trained.job_id)), compute_trajectory_root(entries),
                            3, Root(compute_model_root(state)))
    return forged, entries, commitment


def test_cheating_solver_is_caught_and_slashed(sqlite_server, make_client, trained):
    submitter, solver, verifier = _start(make_client, trained, 2)
    forged, entries, commitment = _forged_trajectory(trained)
    commit_signed(solver, trained, commitment)
    by_segment = {a["segment"]: a for a in verifier.get_assignments()}
    assert set(by_segment) == {0, 1}
    _upload(solver, trained, 0, proof=compute_trajectory_proof(entries, 0))
    salt0 = verify_segment(verifier, by_segment[0]["id"], trained.entries()[1][1])
    _upload(solver, trained, 1, proof=compute_trajectory_proof(entries, 1))
    verifier.reveal_verification(by_segment[0]["id"], trained.entries()[1][1], salt0)
    true_root = trained.entries()[2][1]
    salt1 = verify_segment(verifier, by_segment[1]["id"], true_root)
    _upload(solver, trained, 2, data=forged, proof=compute_trajectory_proof(entries, 2))
    assert verifier.reveal_verification(by_segment[1]["id"], true_root, salt1)["state"] == "disputed"
    ruling = verifier.rule_dispute(1)
    assert ruling["winner"] == "verifier"
    assert verifier.rule_dispute(1) == ruling == verifier.get_dispute(1)  # asking again changes nothing
    job = solver.get_job(trained.job_id)
    assert job["state"] == "failed" and job["outcome"] == "solver_caught_by_referee"
    assert solver.get_balance() == 10_000 - STAKE
    assert verifier.get_balance() == 10_000 - VSTAKE + STAKE // 2 + FEE
    assert submitter.get_balance() == 10_000 - FEE
    report = compute_audit(solver)
    assert report.ok, report.problems
