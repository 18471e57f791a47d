"""The simulator's payouts are the ledger's movements: for any job terms and every way a job can
end, the coordinator's own transitions, applied to a real ledger, move exactly the amounts that
`protocol.economics.compute_job_payouts` (what `veritrain simulate` uses) says."""

import dataclasses
import json
import secrets
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import transitions
from coordinator.clock import Clock
from coordinator.db import Database, upgrade_database
from coordinator.ledger.accounts import BURN_ACCOUNT, MINT_ACCOUNT, available, escrow, stake
from coordinator.ledger.service import get_balance, process_movement, transfer
from coordinator.models import Assignment, Dispute, Job
from coordinator.runtime import Runtime
from coordinator.settings import tiny_preset
from protocol.dispute import OVER, SOLVER, VERIFIER, compute_initial_game
from protocol.economics import JobTerms, Market, Outcome, Payouts, compute_job_payouts
from protocol.signing import generate_signing_key
from protocol.wire import AssignmentState, JobState
from tests.coordinator.market import tiny_spec_json

RUNNABLE_SPEC = json.dumps(tiny_spec_json())

PAST = 0.0  # every deadline below has passed: the protocol clock reads the real time


@pytest.fixture(scope="module")
def runtime():
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        upgrade_database(db.engine)
        yield Runtime(tiny_preset(), db, generate_signing_key(b"\x02" * 32), Clock())
        db.dispose()


@st.composite
def job_terms(draw) -> JobTerms:
    """Terms the market accepts: the price leaves room for every verifier's fee."""
    fee = draw(st.integers(0, 500))
    workers = draw(st.integers(0, 3))
    bounty = draw(st.integers(fee * (workers + 1), fee * (workers + 1) + 5_000))
    min_stake = draw(st.integers(0, 2_000))
    return JobTerms(
        bounty=bounty,
        price=draw(st.integers(0, bounty - fee * (workers + 1))),
        solver_stake=draw(st.integers(min_stake, min_stake + 3_000)),
        verifier_fee=fee,
        min_stake=min_stake,
        workers=workers,
        challenger_stake=draw(st.integers(0, 3_000)),
    )


def _key() -> str:
    return secrets.token_hex(32)


def _fund(session, rt, account, amount: int) -> None:
    process_movement(session, rt, "test.mint", {}, transfer(MINT_ACCOUNT, account, amount))


def _open_job(session, rt, terms: JobTerms, challenger_state: AssignmentState) -> tuple[Job, dict]:
    """A verifying job with escrow, the solver's stake, its working verifiers (agreed) and the
    challenger's assignment in `challenger_state`."""
    parties = {
        "submitter": _key(),
        "solver": _key(),
        "challenger": _key(),
        "workers": [_key() for _ in range(terms.workers)],
    }
    job = Job(
        job_id=_key(),
        submitter=parties["submitter"],
        spec_json=RUNNABLE_SPEC,  # the sweeper reruns the validator before a lateness slash
        profile_label="p",
        bounty=terms.bounty,
        min_stake=terms.min_stake,
        verifier_fee=terms.verifier_fee,
        num_verifiers=terms.workers + 1,
        num_segments=1,
        num_checkpoints=2,
        state=JobState.VERIFYING,
        created_at=PAST,
        bidding_deadline=PAST,
        solver=parties["solver"],
        price=terms.price,
        stake=terms.solver_stake,
        deadline=PAST,
        selection_seed="00" * 32,
    )
    session.add(job)
    session.flush()
    _fund(session, rt, escrow(job.job_id), terms.bounty)
    _fund(session, rt, stake(job.solver, job.job_id), terms.solver_stake)
    _fund(session, rt, stake(parties["challenger"]), terms.challenger_stake)
    for segment, worker in enumerate(parties["workers"]):
        session.add(
            Assignment(
                job_id=job.job_id,
                verifier=worker,
                segment=segment,
                deadline=PAST,
                state=AssignmentState.AGREED,
                commit_hash="ab" * 32,
            )
        )
    worked = challenger_state not in (AssignmentState.AWAITING_START, AssignmentState.ASSIGNED)
    session.add(
        Assignment(
            job_id=job.job_id,
            verifier=parties["challenger"],
            segment=9,
            deadline=PAST,
            state=challenger_state,
            commit_hash="cd" * 32 if worked else None,
        )
    )
    session.flush()
    return job, parties


def _end_game(session, rt, job: Job, challenger: str, winner: str | None) -> None:
    """A dispute whose game is over with `winner` (None: the referee reproduced neither)."""
    [assignment] = [
        a for a in session.query(Assignment).filter_by(job_id=job.job_id, verifier=challenger)
    ]
    game = compute_initial_game(
        game_id="ee" * 32,
        solver_key=job.solver,
        verifier_key=challenger,
        start_step=0,
        start_root="00" * 32,
        end_step=4,
        solver_root="11" * 32,
        verifier_root="22" * 32,
        num_chunks=3,
        now=0,
        move_timeout=10,
    )
    game = dataclasses.replace(
        game,
        phase=OVER,
        turn=None,
        winner=winner,
        reason="test",
        extra={"referee_chunk_hash": "33" * 32},
    )
    dispute = Dispute(
        job_id=job.job_id,
        assignment_id=assignment.id,
        status="open",
        deadline=PAST,
        state_json=json.dumps({"game": game.to_json(), "segment": 9}),
    )
    session.add(dispute)
    session.flush()
    transitions.process_game_over(session, rt, job, dispute, game)


CHALLENGER_STATE = {
    Outcome.SETTLED: AssignmentState.AGREED,
    Outcome.SOLVER_NO_SHOW: AssignmentState.AWAITING_START,
    Outcome.SOLVER_CAUGHT: AssignmentState.DISPUTED,
    Outcome.FALSE_CHALLENGE: AssignmentState.DISPUTED,
    Outcome.BOTH_WRONG: AssignmentState.DISPUTED,
    Outcome.VERIFIER_TIMEOUT: AssignmentState.ASSIGNED,
}
GAME_WINNER = {
    Outcome.SOLVER_CAUGHT: VERIFIER,
    Outcome.FALSE_CHALLENGE: SOLVER,
    Outcome.BOTH_WRONG: None,
}


def _play(session, rt, job: Job, parties: dict, outcome: Outcome) -> None:
    """Drive the coordinator's transitions to `outcome`, then let the sweeper's rules end the job."""
    if outcome == Outcome.SOLVER_NO_SHOW:
        transitions.process_solver_failure(session, rt, job, "solver_missed_commit")
    elif outcome in GAME_WINNER:
        _end_game(session, rt, job, parties["challenger"], GAME_WINNER[outcome])
    elif outcome == Outcome.VERIFIER_TIMEOUT:
        [late] = session.query(Assignment).filter_by(
            job_id=job.job_id, verifier=parties["challenger"]
        )
        assert transitions.process_overdue_assignment(session, rt, late.id)
    if job.state == JobState.VERIFYING:
        assert transitions.process_conclusion(session, rt, job)


def run_on_ledger(rt: Runtime, terms: JobTerms, outcome: Outcome) -> Payouts:
    def play(session) -> Payouts:
        job, parties = _open_job(session, rt, terms, CHALLENGER_STATE[outcome])
        burned_before = get_balance(session, BURN_ACCOUNT)
        _play(session, rt, job, parties, outcome)
        assert job.state in (JobState.SETTLED, JobState.FAILED)
        assert get_balance(session, escrow(job.job_id)) == 0, "escrow must be emptied"

        def money(who: str, *locked) -> int:
            return get_balance(session, available(who)) + sum(
                get_balance(session, a) for a in locked
            )

        return Payouts(
            submitter=money(parties["submitter"]) - terms.bounty,
            solver=money(job.solver, stake(job.solver, job.job_id)) - terms.solver_stake,
            workers=sum(money(w) for w in parties["workers"]),
            challenger=money(parties["challenger"], stake(parties["challenger"]))
            - terms.challenger_stake,
            burned=get_balance(session, BURN_ACCOUNT) - burned_before,
        )

    return rt.db.write(play)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(terms=job_terms(), outcome=st.sampled_from(list(Outcome)))
def test_ledger_moves_what_the_simulator_pays(runtime, terms, outcome):
    assert run_on_ledger(runtime, terms, outcome) == compute_job_payouts(terms, outcome)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_default_market_payouts_are_the_ledgers(runtime, outcome):
    """The very numbers `veritrain simulate` uses at its default market."""
    market = Market()
    terms = JobTerms(
        bounty=round(market.price) + market.verifier_fee,
        price=round(market.price),
        solver_stake=market.solver_stake,
        verifier_fee=market.verifier_fee,
        workers=0,
        challenger_stake=market.verifier_stake,
    )
    assert run_on_ledger(runtime, terms, outcome) == market.compute_payouts(outcome)


def test_money_is_conserved_in_every_outcome():
    terms = JobTerms(
        bounty=1_000, price=600, solver_stake=401, verifier_fee=50, workers=2, challenger_stake=333
    )
    for outcome in Outcome:
        p = compute_job_payouts(terms, outcome)
        assert p.submitter + p.solver + p.workers + p.challenger + p.burned == 0, outcome
