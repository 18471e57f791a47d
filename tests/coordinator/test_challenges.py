"""The open challenge window over HTTP (issue 11): any bonded verifier of the job's profile may
replay a committed segment of its own choice while the job is verifying. A volunteer that catches
a forged segment wins the victim's share of the solver's stake; one that lies pays the
false-challenge penalty; one that agrees is paid nothing; the job waits for open challenges."""

import json

import pytest

from cli.audit_cmd import check_coordinator
from protocol.dispute import SOLVER
from protocol.standin import Player
from protocol.trajectory import compute_trajectory_proof
from protocol.wire import AssignmentState, DisputeStatus, JobState, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.disputes import play_until_idle
from tests.coordinator.market import commit_signed, funded, train_tiny_job, verify_segment
from tests.coordinator.server import REFEREE_TIMEOUT, running_server
from tests.coordinator.test_disputes import _forged_trajectory, _trace, play_out_forged_dispute

BOUNTY, FEE, STAKE, VSTAKE, PRICE = 1000, 50, 400, 500, 600
MAX_CHALLENGES = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_job(tmp_path_factory.mktemp("solver"))


@pytest.fixture
def server(backend, tmp_path):
    with running_server(backend, tmp_path, max_challenges_per_job=MAX_CHALLENGES) as srv:
        yield srv


@pytest.fixture
def client(make_client):
    """A funded client; the referee runs a worker process: allow for a loaded machine."""

    def make() -> CoordinatorClient:
        return funded(lambda key: make_client(key, timeout=REFEREE_TIMEOUT))

    return make


def _verifying(client, trained, commitment=None, entries=None, num_verifiers=0):
    """A job of `trained` committed by its solver (no drawn verifier unless asked)."""
    submitter, solver = client(), client()
    submitter.submit_job(
        trained.spec_json,
        BOUNTY,
        min_stake=STAKE,
        verifier_fee=FEE,
        num_verifiers=num_verifiers,
        num_segments=1,
        bidding_s=30,
    )
    solver.bid(trained.job_id, PRICE, STAKE, trained.profile)
    solver.advance_clock(31)
    solver.award(trained.job_id)
    assert commit_signed(solver, trained, commitment, entries).state is JobState.VERIFYING
    return submitter, solver


def _volunteer(client, trained):
    volunteer = client()
    volunteer.register_verifier([trained.profile], VSTAKE)
    return volunteer


def _upload(solver, trained, index, data=None, entries=None):
    proof = compute_trajectory_proof(entries, index) if entries else trained.proof(index)
    solver.upload_checkpoint(
        trained.job_id, index, index, data or trained.checkpoint_bytes(index), proof
    )


def _refused(call, status, code, words):
    with pytest.raises(CoordinatorError) as err:
        call()
    assert (err.value.status, err.value.problem_code) == (status, code), err.value
    assert words in f"{err.value} {err.value.problem}", err.value.problem


def _assert_audit_ok(client):
    report = check_coordinator(client)
    assert report.ok, report.problems


def test_a_volunteer_catches_a_forged_segment_and_wins_the_victim_share(client, trained):
    forged, entries, commitment = _forged_trajectory(trained)
    submitter, solver = _verifying(client, trained, commitment, entries)
    volunteer = _volunteer(client, trained)
    challenge = volunteer.challenge_segment(trained.job_id, 1)
    assert challenge.volunteer and challenge.segment == 1
    assert challenge.state is AssignmentState.AWAITING_START  # checkpoint 1 is not public yet
    [listed] = solver.get_job_assignments(trained.job_id)
    assert listed.volunteer and listed.verifier == volunteer.public_key
    _upload(solver, trained, 1, entries=entries)
    true_root = trained.entries()[2][1]
    salt = verify_segment(volunteer, challenge.id, true_root)
    _upload(solver, trained, 2, data=forged, entries=entries)
    revealed = volunteer.reveal_verification(challenge.id, true_root, salt)
    assert revealed.state is AssignmentState.DISPUTED
    [dispute] = volunteer.list_disputes()
    ruling, _, _ = play_out_forged_dispute(solver, volunteer, dispute.id, trained, forged)
    assert (ruling.phase, ruling.winner) == ("over", "verifier")
    job = solver.get_job(trained.job_id)
    assert job.state is JobState.FAILED and job.outcome == "solver_caught_by_referee"
    assert solver.get_balance() == 10_000 - STAKE
    # the victim's share of the slashed stake, and no fee: the escrow goes back whole
    assert volunteer.get_balance() == 10_000 - VSTAKE + STAKE // 2
    assert volunteer.get_account().escrow_and_stakes["stake:"] == VSTAKE
    assert submitter.get_balance() == 10_000
    [upheld] = volunteer.get_assignments()
    assert upheld.state is AssignmentState.UPHELD
    _assert_audit_ok(solver)


def test_a_lying_volunteer_pays_and_an_agreeing_one_earns_nothing(server, client, trained):
    submitter, solver = _verifying(client, trained)
    liar, agreer = _volunteer(client, trained), _volunteer(client, trained)
    lie = liar.challenge_segment(trained.job_id, 0)
    agree = agreer.challenge_segment(trained.job_id, 1)
    _upload(solver, trained, 0)
    wrong = bytes(32)
    liar_salt = verify_segment(liar, lie.id, wrong)
    _upload(solver, trained, 1)
    agree_salt = verify_segment(agreer, agree.id, trained.entries()[2][1])
    _upload(solver, trained, 2)
    assert agreer.reveal_verification(agree.id, trained.entries()[2][1], agree_salt).state is (
        AssignmentState.AGREED
    )
    assert liar.reveal_verification(lie.id, wrong, liar_salt).state is AssignmentState.DISPUTED
    [dispute] = solver.list_disputes()
    honest = _trace({0: trained.checkpoint_bytes(0), 1: trained.checkpoint_bytes(1)})
    play_until_idle(solver, dispute.id, Player(SOLVER, solver.key, honest))
    solver.advance_clock(server.settings.move_timeout_s + 1)  # the liar cannot move: it loses
    solver.sweep()
    ruled = solver.get_dispute(dispute.id)
    assert (ruled.status, ruled.winner) == (DisputeStatus.RULED, "solver")
    solver.advance_clock(server.settings.sweep_interval_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert liar.get_account().escrow_and_stakes["stake:"] == VSTAKE - STAKE
    assert solver.get_balance() == 10_000 + PRICE + STAKE // 2
    assert agreer.get_balance() == 10_000 - VSTAKE  # agreed, and paid no fee
    assert agreer.get_account().escrow_and_stakes["stake:"] == VSTAKE
    assert submitter.get_balance() == 10_000 - PRICE
    _assert_audit_ok(solver)


def test_challenges_are_refused_with_the_reason(server, client, make_client, trained):
    submitter, solver = _verifying(client, trained)
    volunteer = _volunteer(client, trained)
    job_id = trained.job_id
    _refused(
        lambda: submitter.challenge_segment(job_id, 0), 403, ProblemCode.FORBIDDEN, "submitter"
    )
    _refused(lambda: solver.challenge_segment(job_id, 0), 403, ProblemCode.FORBIDDEN, "solver")
    stranger = client()
    _refused(lambda: stranger.challenge_segment(job_id, 0), 403, ProblemCode.FORBIDDEN, "register")
    unbonded = _volunteer(client, trained)
    unbonded.withdraw_verifier_stake(VSTAKE)
    _refused(
        lambda: unbonded.challenge_segment(job_id, 0), 403, ProblemCode.FORBIDDEN, "standing stake"
    )
    _refused(
        lambda: volunteer.challenge_segment(job_id, 2), 422, ProblemCode.INVALID_INPUT, "[0, 1]"
    )
    _refused(
        lambda: volunteer.challenge_segment(job_id, -1), 422, ProblemCode.INVALID_INPUT, "segment"
    )
    volunteer.challenge_segment(job_id, 0)
    _refused(
        lambda: volunteer.challenge_segment(job_id, 0),
        409,
        ProblemCode.ALREADY_EXISTS,
        "segment 0",
    )
    volunteer.challenge_segment(job_id, 1)
    late = _volunteer(client, trained)
    _refused(
        lambda: late.challenge_segment(job_id, 0),
        409,
        ProblemCode.QUOTA_EXCEEDED,
        f"{MAX_CHALLENGES} challenges",
    )
    missing = "ab" * 32
    _refused(lambda: late.challenge_segment(missing, 0), 404, ProblemCode.NOT_FOUND, missing)
    solver.advance_clock(server.settings.challenge_window_s)
    _refused(lambda: late.challenge_segment(job_id, 1), 409, ProblemCode.INVALID_STATE, "window")


def test_a_job_with_an_open_challenge_settles_only_once_it_resolves(server, client, trained):
    submitter, solver = _verifying(client, trained)
    volunteer, late = _volunteer(client, trained), _volunteer(client, trained)
    challenge = volunteer.challenge_segment(trained.job_id, 0)
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.VERIFYING  # owes the challenge
    # a job waiting past its window never reopens to challenges (they could chain forever)
    _refused(
        lambda: late.challenge_segment(trained.job_id, 1),
        409,
        ProblemCode.INVALID_STATE,
        "window",
    )
    _upload(solver, trained, 0)
    salt = verify_segment(volunteer, challenge.id, trained.entries()[1][1])
    solver.advance_clock(server.settings.sweep_interval_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.VERIFYING  # the solver owes 1
    _upload(solver, trained, 1)
    volunteer.reveal_verification(challenge.id, trained.entries()[1][1], salt)
    solver.advance_clock(server.settings.sweep_interval_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert submitter.get_balance() == 10_000 - PRICE
    assert volunteer.get_balance() == 10_000 - VSTAKE
    _assert_audit_ok(solver)


def test_a_challenge_of_a_public_segment_goes_straight_to_its_reveal(server, client, trained):
    """Checkpoints already uploaded stay challengeable: the volunteer still commits its own end
    root before it reveals, and the solver owes nothing more (no deadline it could miss)."""
    submitter, solver = _verifying(client, trained)
    _upload(solver, trained, 2)  # the final model is always asked for
    first = _volunteer(client, trained)
    opening = first.challenge_segment(trained.job_id, 0)
    _upload(solver, trained, 0)
    first_salt = verify_segment(first, opening.id, trained.entries()[1][1])
    _upload(solver, trained, 1)  # segment 0's end, now that its verifier committed
    first.reveal_verification(opening.id, trained.entries()[1][1], first_salt)
    volunteer = _volunteer(client, trained)  # segment 1 (checkpoints 1 and 2) is public now
    challenge = volunteer.challenge_segment(trained.job_id, 1)
    assert challenge.state is AssignmentState.ASSIGNED
    salt = verify_segment(volunteer, challenge.id, trained.entries()[2][1])
    [revealable] = volunteer.get_assignments()
    assert revealable.state is AssignmentState.REVEALABLE
    agreed = volunteer.reveal_verification(challenge.id, trained.entries()[2][1], salt)
    assert agreed.state is AssignmentState.AGREED
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert submitter.get_job(trained.job_id).state is JobState.SETTLED


def test_a_stalling_volunteer_cannot_get_the_solver_slashed(server, client, trained):
    """Checkpoint 1 is refused while segment 0's volunteer owes its commit: the solver's upload
    of it has no running deadline meanwhile. The stalling volunteer times out (penalised, not
    replaced), the solver's clock restarts, and the audit still recomputes every draw."""
    submitter, solver = _verifying(client, trained)
    staller, waiting = _volunteer(client, trained), _volunteer(client, trained)
    staller.challenge_segment(trained.job_id, 0)
    blocked = waiting.challenge_segment(trained.job_id, 1)
    _upload(solver, trained, 0)  # segment 0 assigned; checkpoint 1 refused until it commits
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.VERIFYING  # the solver is not slashed
    [missed] = staller.get_assignments()
    assert missed.state is AssignmentState.TIMED_OUT
    assert staller.get_account().escrow_and_stakes["stake:"] < VSTAKE
    assert len(solver.get_job_assignments(trained.job_id)) == 2  # no replacement drawn
    _upload(solver, trained, 1)
    [assigned] = waiting.get_assignments()
    assert assigned.id == blocked.id and assigned.state is AssignmentState.ASSIGNED
    kinds = [json.loads(e.body)["kind"] for e in solver.get_log_entries(0)]
    assert "verification.volunteer_timed_out" in kinds and "verification.timed_out" not in kinds
    _assert_audit_ok(solver)


def test_a_replacement_drawn_onto_its_own_challenge_takes_it_over(server, client, trained):
    """The drawn verifier misses its commit; the replacement draw (which ignores volunteers)
    picks the key that already challenged that segment: its volunteer assignment becomes the
    drawn one, so its work is paid the fee, and the audit recomputes the draw unchanged."""
    first, second = _volunteer(client, trained), _volunteer(client, trained)
    submitter, solver = _verifying(client, trained, num_verifiers=1)
    drawn, other = (first, second) if first.get_assignments() else (second, first)
    [missed] = drawn.get_assignments()
    segment = missed.segment
    _upload(solver, trained, segment)
    challenge = other.challenge_segment(trained.job_id, segment)
    end_root = trained.entries()[segment + 1][1]
    salt = verify_segment(other, challenge.id, end_root)
    solver.advance_clock(server.settings.move_timeout_s + 1)
    solver.sweep()
    [taken_over] = other.get_assignments()
    assert taken_over.id == challenge.id and not taken_over.volunteer
    assert taken_over.state is AssignmentState.COMMITTED
    _upload(solver, trained, segment + 1)
    other.reveal_verification(challenge.id, end_root, salt)
    solver.advance_clock(server.settings.challenge_window_s + 1)
    solver.sweep()
    assert solver.get_job(trained.job_id).state is JobState.SETTLED
    assert other.get_balance() == 10_000 - VSTAKE + FEE  # paid as the drawn verifier
    # the missed commit's penalty (up to the fee) is split: half to the submitter
    assert submitter.get_balance() == 10_000 - PRICE - FEE + FEE // 2
    _assert_audit_ok(solver)
