"""Poisoned specs end to end, a real solver daemon subprocess against a real coordinator subprocess:
every spec of tests/coordinator/test_poisoned_specs.py is refused at submission over HTTP; and
poisoned jobs that got into the database anyway (written by `process_submit` itself, only the
validator skipped: a job stored before today's rules) are listed, biddable and funded, yet the
solver refuses each once, never bids on it, never has a stake locked for it, and goes on to win,
train and be paid for a good job posted next to them."""

import json

import pytest
from sqlalchemy import select

from cli.audit_cmd import check_coordinator
from coordinator.clock import Clock
from coordinator.db import Database
from coordinator.jobs import service as jobs_service
from coordinator.jobs.schemas import SubmitJobRequest
from coordinator.log.repository import get_log_state
from coordinator.models import Bid, Job
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from protocol.economics import compute_max_price
from protocol.errors import InvalidSpec
from protocol.spec import compute_job_id, parse_job_spec
from protocol.training import check_runnable_spec
from protocol.wire import JobState
from sdk.client import CoordinatorError
from tests.coordinator.market import tiny_spec_json
from tests.coordinator.test_poisoned_specs import POISONED, _poisoned
from tests.daemons.test_daemons import Market, wait_until

pytestmark = pytest.mark.slow
FUNDS, BOUNTY, PRICE, STAKE = 10_000, 1000, 600, 400


@pytest.fixture
def market(tmp_path):
    m = Market(tmp_path)
    yield m
    m.close()


def storable_poisoned_specs(profile: str) -> dict[str, dict]:
    """The poisoned specs a solver of `profile` lists and would build: they parse (so
    `process_submit` can store them), carry the good job's profile, stay cheap to checkpoint-plan,
    and fail only `check_runnable_spec`."""
    specs = {}
    for name, (edit, _field) in sorted(POISONED.items()):
        spec_json = _poisoned(edit)
        try:
            spec = parse_job_spec(spec_json)
        except InvalidSpec:
            continue
        if spec.profile.label != profile or spec.steps // spec.checkpoint_interval > 10_000:
            continue
        with pytest.raises(InvalidSpec):
            check_runnable_spec(spec)
        specs[name] = spec_json
    return specs


def insert_unvalidated(market: Market, submitter: str, spec_json: dict, monkeypatch) -> str:
    """Store a job as `process_submit` does (job row, signed log entry, bounty moved into the job's
    escrow) on the coordinator's own database and log key, with only the validator skipped."""
    settings = Settings(
        database_url=f"sqlite:///{market.tmp / 'c.db'}",
        signing_key_file=market.tmp / "c.key",
        dev=True,
    )
    db = Database(settings.database_url)
    try:
        with db.read() as session:
            offset = get_log_state(session).clock_offset  # the dev server's protocol clock
        rt = Runtime(settings=settings, db=db, key=settings.load_signing_key(), clock=Clock(offset))
        request = SubmitJobRequest(
            spec=spec_json,
            bounty=BOUNTY,  # as the good job's: the solver's price and stake fit, only the spec
            min_stake=STAKE,  # may keep it away
            num_verifiers=0,
            bidding_s=600,  # open for the whole test: listed to the solver every round
        )
        with monkeypatch.context() as patch:
            patch.setattr(jobs_service, "compute_spec_layout", lambda *_args: {})
            return db.write(
                lambda session: jobs_service.process_submit(session, rt, submitter, request)
            ).job_id
    finally:
        db.dispose()


def read_rows(market: Market, job_ids: list[str]) -> tuple[list[Job], list[Bid]]:
    db = Database(f"sqlite:///{market.tmp / 'c.db'}")
    try:
        with db.read() as session:
            jobs = list(session.scalars(select(Job).where(Job.job_id.in_(job_ids))))
            bids = list(session.scalars(select(Bid).where(Bid.job_id.in_(job_ids))))
            return jobs, bids
    finally:
        db.dispose()


def test_poisoned_specs_are_refused_and_a_stored_one_never_gets_a_bid(market, monkeypatch):
    market.start_coordinator()
    submitter, solver = market.party("submitter"), market.party("solver")

    # (a) Over HTTP, every poisoned spec is refused before any money moves.
    for name, (edit, field) in sorted(POISONED.items()):
        with pytest.raises(CoordinatorError) as err:
            submitter.submit_job(_poisoned(edit), BOUNTY, min_stake=STAKE, num_verifiers=0)
        problem = err.value.problem
        assert (err.value.status, problem["code"]) == (422, "invalid_spec"), (name, problem)
        assert problem.get("field", "").startswith(field), (name, problem)
    assert submitter.get_account().escrow_and_stakes == {}
    assert submitter.get_balance() == FUNDS

    # (b) Poisoned jobs stored behind the validator's back, then a good job through the API.
    good_spec = tiny_spec_json(seed=7)
    profile = parse_job_spec(good_spec).profile.label
    poisoned_specs = storable_poisoned_specs(profile)
    assert "hidden list with huge sizes" in poisoned_specs, sorted(poisoned_specs)
    market.daemon("solver", "solver", "--price", str(PRICE), "--stake", str(STAKE))
    poisoned = {
        name: insert_unvalidated(market, submitter.public_key, spec, monkeypatch)
        for name, spec in poisoned_specs.items()
    }
    for name, job_id in poisoned.items():
        job = submitter.get_job(job_id)
        assert (job.state, job.profile, job.min_stake) == (JobState.BIDDING, profile, STAKE), name
        assert compute_max_price(job.bounty, job.verifier_fee, job.num_verifiers) >= PRICE, name
    listed = {j.job_id for j in submitter.list_jobs(state=JobState.BIDDING, profile=profile)}
    assert set(poisoned.values()) <= listed
    ledger = {a.account: a.balance for a in submitter.iter_ledger_accounts()}
    assert all(ledger[f"escrow::{job_id}"] == BOUNTY for job_id in poisoned.values()), ledger
    assert submitter.get_balance() == FUNDS - BOUNTY * len(poisoned)

    state_file = market.tmp / "solver" / "state.json"
    stakes_seen: list[dict[str, int]] = []

    def watch_stakes() -> None:
        """The solver's locked stakes as the API shows them, sampled every poll: a stake on a
        poisoned job would be a bid on it (and, once awarded, a slash waiting to happen)."""
        stakes = solver.get_account().escrow_and_stakes
        stakes_seen.append(stakes)
        staked = [name for name, job_id in poisoned.items() if any(job_id in a for a in stakes)]
        assert not staked, f"the solver staked on poisoned jobs {staked}: {stakes}"

    def refused_all() -> dict | None:
        watch_stakes()
        refused = json.loads(state_file.read_text()).get("refused", {})
        return refused if refused.keys() >= set(poisoned.values()) else None

    refused = wait_until(refused_all, 30, "the solver to refuse every poisoned job")
    log = (market.tmp / "solver.log").read_text()
    for name, job_id in poisoned.items():
        assert refused[job_id], name  # the reason, as InvalidSpec names it
        assert f"refusing job {job_id[:12]}: cannot run it" in log, name

    submitter.submit_job(
        good_spec, BOUNTY, min_stake=STAKE, num_verifiers=0, num_segments=1, bidding_s=3
    )
    good_id = compute_job_id(parse_job_spec(good_spec)).hex()

    def settled() -> bool:
        watch_stakes()
        return submitter.get_job(good_id).state is JobState.SETTLED

    wait_until(settled, 60, "the good job to settle")

    # The solver bid on and was paid for the good job: not wedged by the poisoned ones.
    good = submitter.get_job(good_id)
    assert (good.solver, good.outcome) == (solver.public_key, "accepted")
    assert [(b.bidder, b.stake) for b in good.bids] == [(solver.public_key, STAKE)]
    assert market.processes[-1].poll() is None, "the solver daemon died"
    assert solver.get_balance() == FUNDS + PRICE  # its stake came back whole: never slashed
    watch_stakes()
    assert set(stakes_seen[-1].values()) <= {0}, stakes_seen[-1]  # the good job's, released
    assert any(good_id in account for stakes in stakes_seen for account in stakes)

    # Never a bid, a stake or a slash for a poisoned job: over the API, in the DB, in the log.
    for name, job_id in poisoned.items():
        job = submitter.get_job(job_id)
        assert (job.state, job.bids, job.solver) == (JobState.BIDDING, (), None), name
    jobs, bids = read_rows(market, list(poisoned.values()))
    assert len(jobs) == len(poisoned) and bids == []
    kinds = []
    for entry in submitter.iter_log_entries(submitter.get_tree_head().size):
        body = json.loads(entry.body)
        kinds.append(body["kind"])
        if body["data"].get("job_id") in poisoned.values():
            assert body["kind"] == "job.submitted", body
    assert "job.solver_slashed" not in kinds and kinds.count("job.bid") == 1
    report = check_coordinator(submitter)  # the direct inserts kept the ledger and log whole
    assert report.ok, report.problems
