"""A hostile submitter or outsider cannot hurt honest parties cheaply: verifier slots cost a bond,
jobs pay a bounty, a checkpoint is never a dataset, and the draw's candidates are one indexed
query that picks exactly what the old scan of every verifier picked."""

import hashlib
import json
import secrets
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from coordinator.clock import Clock
from coordinator.db import Database, upgrade_database
from coordinator.jobs import repository as jobs_repository
from coordinator.ledger.accounts import MINT_ACCOUNT, available, stake
from coordinator.ledger.service import get_balance, process_movement, transfer
from coordinator.models import BLOB_CHECKPOINT, Verifier, VerifierProfile
from coordinator.runtime import Runtime
from coordinator.settings import tiny_preset
from coordinator.verification import repository
from coordinator.verification.schemas import RegisterVerifierRequest
from coordinator.verification.service import process_register_verifier
from protocol.errors import InvalidInput
from protocol.sampling import compute_eligible_verifiers, compute_verifier_choice
from protocol.signing import generate_signing_key
from protocol.wire import ProblemCode
from sdk.client import CoordinatorError
from tests.coordinator.market import funded
from tests.coordinator.test_datasets import file_job_spec, make_dataset_file

BOND = tiny_preset().min_verifier_bond
PROFILE = "pinned:torch-2.13.0:float32:t1:avx2"


def _refused_field(call) -> tuple[ProblemCode, str | None]:
    with pytest.raises(CoordinatorError) as refused:
        call()
    assert refused.value.status == 422
    return refused.value.problem_code, refused.value.problem.get("field")


# --- over HTTP ---------------------------------------------------------------------------------


def test_free_registration_is_refused(make_client):
    verifier = funded(make_client)
    code, field = _refused_field(lambda: verifier.register_verifier([PROFILE], 0))
    assert (code, field) == (ProblemCode.INVALID_INPUT, "stake")
    assert verifier.get_balance() == 10_000  # nothing moved


def test_bond_is_enforced_after_the_registration(make_client):
    verifier = funded(make_client)
    code, field = _refused_field(lambda: verifier.register_verifier([PROFILE], BOND - 1))
    assert field == "stake"
    assert verifier.register_verifier([PROFILE], BOND).stake == BOND
    # topping up, or changing profiles, only needs the standing stake to stay at the bond
    assert verifier.register_verifier([PROFILE, "other"], 0).stake == BOND


def test_withdrawal_cannot_keep_a_slot_below_the_bond(make_client):
    verifier = funded(make_client)
    verifier.register_verifier([PROFILE], BOND + 5)
    code, field = _refused_field(lambda: verifier.withdraw_verifier_stake(6))
    assert field == "amount"
    assert verifier.withdraw_verifier_stake(5).stake == BOND
    assert verifier.withdraw_verifier_stake(BOND).stake == 0  # leaving entirely is fine


def test_zero_bounty_is_refused(make_client):
    submitter = funded(make_client)
    spec = file_job_spec(make_dataset_file())
    code, field = _refused_field(lambda: submitter.submit_job(spec, 0, bidding_s=30))
    assert (code, field) == (ProblemCode.INVALID_INPUT, "bounty")


def test_a_checkpoints_hash_is_not_a_dataset(server, make_client):
    client = funded(make_client)
    data = make_dataset_file()
    sha256 = hashlib.sha256(data).hexdigest()
    db = Database(server.settings.database_url)
    try:  # the same bytes stored as a checkpoint, as a solver's upload would
        server.app.state.runtime.blobs.put_stream(BLOB_CHECKPOINT, sha256, [data])
        db.write(
            lambda s: jobs_repository.add_blob_if_missing(s, sha256, len(data), BLOB_CHECKPOINT)
        )
    finally:
        db.dispose()
    with pytest.raises(CoordinatorError) as missing:
        client.download_dataset(sha256)
    assert missing.value.status == 404
    with pytest.raises(CoordinatorError) as refused:
        client.submit_job(file_job_spec(data), bounty=100, min_stake=10, verifier_fee=5)
    assert refused.value.problem_code is ProblemCode.INVALID_STATE
    client.upload_dataset(data)  # the same bytes as a dataset: a row of their own
    assert client.download_dataset(sha256) == data


# --- the ledger and the draw, through the service layer ----------------------------------------


@pytest.fixture
def runtime():
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        upgrade_database(db.engine)
        yield Runtime(tiny_preset(), db, generate_signing_key(b"\x03" * 32), Clock())
        db.dispose()


def _register(rt: Runtime, who: str, profiles: list[str], amount: int) -> None:
    def run(session) -> None:
        process_movement(
            session, rt, "test.mint", {}, transfer(MINT_ACCOUNT, available(who), amount)
        )
        process_register_verifier(
            session, rt, who, RegisterVerifierRequest(profiles=profiles, stake=amount)
        )

    rt.db.write(run)


def _stored_profiles(rt: Runtime, who: str) -> list[str]:
    with rt.db.read() as session:
        stmt = select(VerifierProfile.profile_label).where(VerifierProfile.public_key == who)
        return sorted(session.execute(stmt).scalars())


def test_registration_keeps_the_profile_table_in_step(runtime):
    who = secrets.token_hex(32)
    _register(runtime, who, ["a", "b", "b"], BOND)
    assert _stored_profiles(runtime, who) == ["a", "b"]
    _register(runtime, who, ["b", "c"], 1)  # re-registration replaces the list
    assert _stored_profiles(runtime, who) == ["b", "c"]
    with runtime.db.read() as session:
        assert json.loads(session.get(Verifier, who).profiles) == ["b", "c"]
        assert repository.get_profile_verifier_stakes(session, "a") == []
        assert repository.get_profile_verifier_stakes(session, "c") == [(who, BOND + 1, None)]


def test_refused_registration_changes_nothing(runtime):
    who = secrets.token_hex(32)
    with pytest.raises(InvalidInput) as refused:
        _register(runtime, who, ["a"], BOND - 1)
    assert refused.value.field == "stake"
    assert _stored_profiles(runtime, who) == []


def _old_candidates(session) -> list[tuple[str, int, list[str]]]:
    """What the coordinator passed to the draw before verifier_profiles: every verifier, by
    key, with its standing stake and its JSON profile list."""
    verifiers = session.execute(select(Verifier).order_by(Verifier.public_key)).scalars()
    return [
        (v.public_key, get_balance(session, stake(v.public_key)), json.loads(v.profiles))
        for v in verifiers
    ]


def test_indexed_query_draws_what_the_old_filter_drew(runtime):
    keys = sorted(secrets.token_hex(32) for _ in range(24))
    profiles = [["p"], ["q"], ["p", "q"], ["r", "p"]]
    for n, who in enumerate(keys):
        _register(runtime, who, profiles[n % 4], BOND + 37 * n)
    excluded = (keys[2], keys[5])  # a solver and a submitter who are also verifiers
    with runtime.db.read() as session:
        old = _old_candidates(session)
        for label in ("p", "q", "r", "missing"):
            rows = repository.get_profile_verifier_stakes(session, label)
            new = compute_eligible_verifiers(
                [(k, w, (label,)) for k, w, _ in rows], label, excluded
            )
            assert new == compute_eligible_verifiers(old, label, excluded)
            for seed in (b"\x00" * 32, b"\x07" * 32, hashlib.sha256(label.encode()).digest()):
                assert compute_verifier_choice(seed, new, 3) == compute_verifier_choice(
                    seed, compute_eligible_verifiers(old, label, excluded), 3
                )
