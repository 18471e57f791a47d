"""The job market end to end on a real server: award rule, stakes, commitment, checkpoints,
commit/reveal, settlement, no-show slashing, restarts — and the audit agrees every time."""

import pytest
from nacl.signing import SigningKey

from cli.audit_cmd import check_coordinator
from protocol.wire import AssignmentState, BidStatus, JobState, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from tests.coordinator.market import (
    commit_signed,
    commit_untrained,
    funded,
    tiny_spec_json,
    train_tiny_job,
    verify_segment,
)
from tests.coordinator.server import ServerThread, database_url, make_settings

BOUNTY, FEE, STAKE = 1000, 50, 400


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_job(tmp_path_factory.mktemp("solver"))


def _post_job(submitter, trained, **kwargs):
    params = dict(min_stake=STAKE, verifier_fee=FEE, num_verifiers=1, num_segments=1, bidding_s=30)
    params.update(kwargs)
    return submitter.submit_job(trained.spec_json, BOUNTY, **params)


def _award(client, job_id):
    client.advance_clock(31)
    return client.award(job_id)


def _assert_audit_ok(client):
    report = check_coordinator(client)
    assert report.ok, report.problems
    return report


def test_award_rule_lowest_price_then_earliest(server, make_client, trained):
    submitter = funded(make_client)
    job = _post_job(submitter, trained)
    assert job.job_id == trained.job_id and submitter.get_balance() == 10_000 - BOUNTY
    a, b, c = (funded(make_client) for _ in range(3))
    a.bid(trained.job_id, 700, STAKE, trained.profile)
    b.bid(trained.job_id, 600, STAKE + 10, trained.profile)
    c.bid(trained.job_id, 600, STAKE, trained.profile)  # same price as b, later
    with pytest.raises(CoordinatorError) as err:
        a.award(trained.job_id)
    assert err.value.problem_code is ProblemCode.INVALID_STATE  # bidding still open
    assert _award(a, trained.job_id).state is JobState.AWARDED
    view = a.get_job(trained.job_id)
    assert view.solver == b.public_key and view.price == 600
    assert {x.bidder: x.status for x in view.bids} == {
        a.public_key: BidStatus.LOST,
        b.public_key: BidStatus.WON,
        c.public_key: BidStatus.LOST,
    }
    assert a.get_balance() == 10_000 and c.get_balance() == 10_000  # losing stakes released
    assert b.get_balance() == 10_000 - STAKE - 10
    _assert_audit_ok(a)


def test_bids_are_validated(server, make_client, trained):
    submitter, solver = funded(make_client), funded(make_client, 100)
    _post_job(submitter, trained)
    cases = [
        (
            dict(price=10, stake=STAKE, profile="repro:fo1:torch-2.13.0:float32"),
            409,
            ProblemCode.PROFILE_MISMATCH,
        ),
        (dict(price=10, stake=STAKE - 1, profile=trained.profile), 422, ProblemCode.INVALID_INPUT),
        (dict(price=BOUNTY, stake=STAKE, profile=trained.profile), 422, ProblemCode.INVALID_INPUT),
        (dict(price=10, stake=STAKE, profile=trained.profile), 409, ProblemCode.INSUFFICIENT_FUNDS),
    ]
    for kwargs, status, code in cases:
        with pytest.raises(CoordinatorError) as err:
            solver.bid(trained.job_id, **kwargs)
        assert (err.value.status, err.value.problem_code) == (status, code)
    with pytest.raises(CoordinatorError) as err:
        submitter.bid(trained.job_id, 10, STAKE, trained.profile)
    assert (err.value.status, err.value.problem_code) == (403, ProblemCode.FORBIDDEN)
    with pytest.raises(CoordinatorError) as err:
        submitter.submit_job({"model": {"name": "nope"}}, 10)
    assert err.value.status == 422 and err.value.problem_code is ProblemCode.INVALID_SPEC


def test_a_second_bid_and_the_same_job_twice_already_exist(server, make_client, trained):
    submitter, solver = funded(make_client), funded(make_client)
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    with pytest.raises(CoordinatorError) as err:
        solver.bid(trained.job_id, 500, STAKE, trained.profile)
    assert (err.value.status, err.value.problem_code) == (409, ProblemCode.ALREADY_EXISTS)
    with pytest.raises(CoordinatorError) as err:
        _post_job(submitter, trained)
    assert (err.value.status, err.value.problem_code) == (409, ProblemCode.ALREADY_EXISTS)


def test_honest_lifecycle_settles_and_pays_everyone(server, make_client, trained):
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    verifier.register_verifier([trained.profile], 500)
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    solver.heartbeat(trained.job_id)
    committed = commit_signed(solver, trained)
    assert committed.state is JobState.VERIFYING
    [assignment] = verifier.get_assignments()
    seg = assignment.segment
    assert assignment.state is AssignmentState.AWAITING_START and seg in (0, 1)
    with pytest.raises(CoordinatorError) as err:  # the end root may not be revealed before commits
        solver.upload_checkpoint(
            trained.job_id,
            seg + 1,
            seg + 1,
            trained.checkpoint_bytes(seg + 1),
            trained.proof(seg + 1),
        )
    assert err.value.problem_code is ProblemCode.INVALID_STATE
    solver.upload_checkpoint(
        trained.job_id, seg, seg, trained.checkpoint_bytes(seg), trained.proof(seg)
    )
    assert verifier.download_checkpoint(trained.job_id, seg) == trained.checkpoint_bytes(seg)
    salt = verify_segment(verifier, assignment.id, trained.entries()[seg + 1][1])
    solver.upload_checkpoint(
        trained.job_id, seg + 1, seg + 1, trained.checkpoint_bytes(seg + 1), trained.proof(seg + 1)
    )
    agreed = verifier.reveal_verification(assignment.id, trained.entries()[seg + 1][1], salt)
    assert agreed.state is AssignmentState.AGREED
    solver.advance_clock(server.settings.challenge_window_s + 1)
    assert solver.sweep().resolved >= 1
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert solver.get_balance() == 10_000 + 600
    assert verifier.get_balance() == 10_000 - 500 + FEE
    assert submitter.get_balance() == 10_000 - 600 - FEE
    _assert_audit_ok(solver)


def test_checkpoint_not_matching_the_commitment_is_rejected(server, make_client, trained):
    submitter, solver = funded(make_client), funded(make_client)
    _post_job(submitter, trained, num_verifiers=0, verifier_fee=0)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    commit_signed(solver, trained)
    with pytest.raises(CoordinatorError) as err:  # checkpoint 1's bytes with checkpoint 0's proof
        solver.upload_checkpoint(
            trained.job_id, 0, 1, trained.checkpoint_bytes(1), trained.proof(0)
        )
    assert err.value.status == 422
    with pytest.raises(CoordinatorError) as err:
        solver.upload_checkpoint(trained.job_id, 1, 1, b"not safetensors", trained.proof(1))
    assert err.value.problem_code is ProblemCode.CHECKPOINT_CORRUPT


def test_no_show_solver_is_slashed_and_audit_agrees(server, make_client, trained):
    submitter, solver = funded(make_client), funded(make_client)
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    solver.advance_clock(server.settings.heartbeat_timeout_s + 1)
    solver.sweep()
    view = solver.get_job(trained.job_id)
    assert view.state is JobState.FAILED and view.outcome == "solver_missed_heartbeat"
    assert solver.get_balance() == 10_000 - STAKE
    assert submitter.get_balance() == 10_000 + STAKE // 2  # bounty back plus half the slash
    burned = {a.account: a.balance for a in solver.iter_ledger_accounts()}["burn::"]
    assert burned == STAKE - STAKE // 2
    _assert_audit_ok(solver)


def test_late_verifier_times_out_and_job_still_settles(server, make_client, trained):
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    verifier.register_verifier([trained.profile], 500)
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    commit_signed(solver, trained)
    [assignment] = verifier.get_assignments()
    seg = assignment.segment
    solver.upload_checkpoint(
        trained.job_id, seg, seg, trained.checkpoint_bytes(seg), trained.proof(seg)
    )
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()
    assert verifier.get_assignments()[0].state is AssignmentState.TIMED_OUT
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert verifier.get_account().escrow_and_stakes["stake:"] == 500 - FEE
    _assert_audit_ok(solver)


def _committed_with_a_spare_verifier(make_client, trained):
    """`trained` committed with one drawn verifier (`first`), and a second registered after
    the draw, so it can only come in as a replacement. (submitter, solver, first, second)."""
    submitter, solver = funded(make_client), funded(make_client)
    first, second = funded(make_client), funded(make_client)
    first.register_verifier([trained.profile], 500)
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    commit_signed(solver, trained)
    second.register_verifier([trained.profile], 500)
    return submitter, solver, first, second


def test_verifier_missing_its_commit_is_replaced_and_penalised(server, make_client, trained):
    submitter, solver, first, second = _committed_with_a_spare_verifier(make_client, trained)
    [assignment] = first.get_assignments()
    seg = assignment.segment
    solver.upload_checkpoint(
        trained.job_id, seg, seg, trained.checkpoint_bytes(seg), trained.proof(seg)
    )
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()
    assert first.get_assignments()[0].state is AssignmentState.TIMED_OUT
    [replacement] = second.get_assignments()
    assert (replacement.segment, replacement.state) == (seg, AssignmentState.ASSIGNED)
    salt = verify_segment(second, replacement.id, trained.entries()[seg + 1][1])
    solver.upload_checkpoint(
        trained.job_id,
        seg + 1,
        trained.entries()[seg + 1][0],
        trained.checkpoint_bytes(seg + 1),
        trained.proof(seg + 1),
    )
    second.reveal_verification(replacement.id, trained.entries()[seg + 1][1], salt)
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert first.get_account().escrow_and_stakes["stake:"] == 500 - FEE
    assert second.get_account().available == 10_000 - 500 + FEE
    _assert_audit_ok(solver)


@pytest.fixture(scope="module")
def trained4(tmp_path_factory):
    spec = {**tiny_spec_json(seed=44), "steps": 4}  # 4 segments: one is always still secret
    return train_tiny_job(tmp_path_factory.mktemp("solver4"), spec_json=spec)


def _upload(solver, trained, index: int) -> None:
    entries = trained.entries()
    solver.upload_checkpoint(
        trained.job_id,
        index,
        entries[index][0],
        trained.checkpoint_bytes(index),
        trained.proof(index),
    )


def test_verifier_missing_its_reveal_is_replaced_on_a_segment_still_secret(
    server, make_client, trained4
):
    """After a missed reveal the segment's end is public, so a replacement there could copy it:
    the replacement replays a segment neither sampled nor with a public end, drawn from the seed
    (and `veritrain audit` recomputes that draw)."""
    t = trained4
    submitter, solver, first, second = _committed_with_a_spare_verifier(make_client, t)
    [missed] = first.get_assignments()
    seg = missed.segment
    _upload(solver, t, seg)
    verify_segment(first, missed.id, t.entries()[seg + 1][1])
    _upload(solver, t, seg + 1)  # the end is public; `first` never reveals
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()
    assert first.get_assignments()[0].state is AssignmentState.TIMED_OUT
    [replacement] = second.get_assignments()
    other = replacement.segment
    assert other != seg and other + 1 not in (seg, seg + 1)  # its end was never public
    if replacement.state is AssignmentState.AWAITING_START:
        _upload(solver, t, other)
    salt = verify_segment(second, replacement.id, t.entries()[other + 1][1])
    _upload(solver, t, other + 1)
    second.reveal_verification(replacement.id, t.entries()[other + 1][1], salt)
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(t.job_id).state is JobState.SETTLED
    assert second.get_account().available == 10_000 - 500 + FEE
    _assert_audit_ok(solver)


def test_state_survives_a_restart(backend, tmp_path, trained):
    keys = [SigningKey.generate() for _ in range(2)]
    with database_url(backend, tmp_path) as url:
        settings = make_settings(url, tmp_path)
        with ServerThread(settings) as first:
            submitter, solver = (CoordinatorClient(first.url, k) for k in keys)
            submitter.faucet(5000)
            solver.faucet(5000)
            _post_job(submitter, trained)
            solver.bid(trained.job_id, 600, STAKE, trained.profile)
            solver.advance_clock(31)
        with ServerThread(settings) as second:
            client = CoordinatorClient(second.url, keys[1])
            client.sweep()  # the restarted server finds the overdue bidding and awards it
            assert client.get_job(trained.job_id).solver == client.public_key
            _assert_audit_ok(client)


def test_job_listing_filters_and_pages(server, make_client, trained):
    submitter = funded(make_client)
    _post_job(submitter, trained)
    other = dict(trained.spec_json, seed=99)
    submitter.submit_job(other, 10, bidding_s=30)
    first = submitter.list_jobs(limit=1)
    second = submitter.list_jobs(after=first[0].id)
    assert [j.job_id for j in first] == [trained.job_id] and len(second) == 1
    assert len(submitter.list_jobs(state=JobState.BIDDING, profile=trained.profile)) == 2
    assert submitter.list_jobs(profile="repro:fo1:torch-2.13.0:float32") == []
    assert submitter.list_jobs(state=JobState.SETTLED) == []


def test_verifier_withdraws_stake_only_when_idle(server, make_client, trained):
    submitter, solver, verifier = funded(make_client), funded(make_client), funded(make_client)
    assert verifier.register_verifier([trained.profile], 500).stake == 500
    _post_job(submitter, trained)
    solver.bid(trained.job_id, 600, STAKE, trained.profile)
    _award(solver, trained.job_id)
    commit_signed(solver, trained)
    with pytest.raises(CoordinatorError) as err:  # it holds an assignment: it could be slashed
        verifier.withdraw_verifier_stake(100)
    assert err.value.problem_code is ProblemCode.INVALID_STATE
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()  # the solver never uploaded: it is slashed, the assignment cancelled
    assert verifier.withdraw_verifier_stake(100).stake == 400
    with pytest.raises(CoordinatorError) as err:
        verifier.withdraw_verifier_stake(401)
    assert err.value.problem_code is ProblemCode.INSUFFICIENT_FUNDS
    assert verifier.get_balance() == 10_000 - 400
    _assert_audit_ok(verifier)


def test_repro_jobs_go_to_any_repro_verifier_whatever_its_hardware(server, make_client):
    """A repro profile's label pins no threads or ISA: a verifier registered for it qualifies;
    one registered only for a pinned profile never does (a scheduling rule, not a slash)."""
    from protocol.presets import example_job_spec_json
    from protocol.spec import compute_job_id, parse_job_spec

    spec_json = example_job_spec_json("mlp", steps=4, profile="repro")
    spec = parse_job_spec(spec_json)
    label, job_id = spec.profile.label, compute_job_id(spec)
    assert label == "repro:fo1:torch-2.13.0:float32"
    submitter, solver = funded(make_client), funded(make_client)
    repro_verifier, pinned_verifier = funded(make_client), funded(make_client)
    repro_verifier.register_verifier([label], 500)
    pinned_verifier.register_verifier(["pinned:torch-2.13.0:float32:t1:avx2"], 5000)
    submitter.submit_job(
        spec_json, BOUNTY, min_stake=STAKE, verifier_fee=FEE, num_verifiers=2, bidding_s=30
    )
    solver.bid(job_id.hex(), 600, STAKE, label)
    _award(solver, job_id.hex())
    checkpoints = submitter.get_job(job_id.hex()).num_checkpoints
    commit_untrained(solver, spec_json, checkpoints)
    assert [a.job_id for a in repro_verifier.get_assignments()] == [job_id.hex()]
    assert pinned_verifier.get_assignments() == []  # two were wanted; only one could replay it
