"""A job nobody can run, already running, is the submitter's provable fault (`invalid_spec`), never
a missed heartbeat of the solver who took it: the solver may claim it (the coordinator reruns the
validator), and the sweeper checks the spec before it slashes anyone for lateness.

Submission refuses such specs, so the job is let in here by switching the validator off for the
one submission (the server runs in this process), as a spec stored under older rules would be."""

import json

import pytest

from coordinator.jobs import service as jobs_service
from protocol.wire import JobState, ProblemCode
from sdk.client import CoordinatorError
from tests.coordinator.market import funded, tiny_spec_json

BOUNTY, STAKE, FUNDS = 1_000, 300, 10_000


def _awarded_job(make_client, monkeypatch, runnable: bool):
    submitter, solver = funded(make_client, FUNDS), funded(make_client, FUNDS)
    spec = tiny_spec_json()
    if not runnable:
        spec["model"]["config"]["hidden"] = [8192] * 8  # far over the model size limit
        monkeypatch.setattr(jobs_service, "compute_spec_layout", lambda *_: {})  # no validator
    job_id = submitter.submit_job(spec, BOUNTY, min_stake=STAKE, bidding_s=30).job_id
    monkeypatch.undo()
    solver.bid(job_id, 500, STAKE, submitter.get_job(job_id).profile)
    submitter.advance_clock(31)
    assert solver.award(job_id).state == JobState.AWARDED
    return submitter, solver, job_id


def _assert_refunded_as_spec_fault(submitter, solver, job_id):
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.FAILED, "invalid_spec")
    assert solver.get_balance() == FUNDS  # its stake came back: it lost nothing
    assert submitter.get_balance() == FUNDS  # the escrow came back
    head = submitter.get_tree_head()
    last = json.loads(submitter.get_log_entries(head.size - 1, 1)[0].body)
    assert last["kind"] == "job.refunded"
    assert (last["data"]["reason"], last["data"]["fault"]) == ("invalid_spec", "submitter")
    assert "model" in last["data"]["detail"]  # the validator's own words name what is wrong


def test_solver_claim_of_an_unrunnable_spec_ends_the_job_as_the_submitters_fault(
    make_client, monkeypatch
):
    submitter, solver, job_id = _awarded_job(make_client, monkeypatch, runnable=False)
    solver.report_invalid_spec(job_id)
    _assert_refunded_as_spec_fault(submitter, solver, job_id)


def test_a_false_claim_is_refused_and_changes_nothing(make_client, monkeypatch):
    submitter, solver, job_id = _awarded_job(make_client, monkeypatch, runnable=True)
    with pytest.raises(CoordinatorError) as refused:
        solver.report_invalid_spec(job_id)
    assert (refused.value.status, refused.value.problem_code) == (409, ProblemCode.INVALID_STATE)
    assert submitter.get_job(job_id).state == JobState.AWARDED
    assert solver.get_balance() == FUNDS - STAKE


def test_only_the_solver_may_claim(make_client, monkeypatch):
    submitter, _solver, job_id = _awarded_job(make_client, monkeypatch, runnable=False)
    with pytest.raises(CoordinatorError) as refused:
        submitter.report_invalid_spec(job_id)
    assert refused.value.problem_code == ProblemCode.FORBIDDEN


def test_a_missed_heartbeat_on_an_unrunnable_job_slashes_nobody(make_client, monkeypatch):
    submitter, solver, job_id = _awarded_job(make_client, monkeypatch, runnable=False)
    submitter.advance_clock(61)  # past the heartbeat deadline (tiny preset: 60 s)
    submitter.sweep()
    _assert_refunded_as_spec_fault(submitter, solver, job_id)


def test_a_missed_heartbeat_on_a_runnable_job_still_slashes(make_client, monkeypatch):
    submitter, solver, job_id = _awarded_job(make_client, monkeypatch, runnable=True)
    submitter.advance_clock(61)
    submitter.sweep()
    job = submitter.get_job(job_id)
    assert (job.state, job.outcome) == (JobState.FAILED, "solver_missed_heartbeat")
    assert solver.get_balance() == FUNDS - STAKE
