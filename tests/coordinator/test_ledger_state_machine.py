"""Stateful property test of the ledger service: conservation and non-negativity under any
sequence of deposits, escrows, stakes, slashes, payouts, refunds and burns."""

import json
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select

from coordinator.clock import Clock
from coordinator.db import Database, upgrade_database
from coordinator.errors import InsufficientFunds
from coordinator.ledger.accounts import (
    BURN_ACCOUNT,
    FEES_ACCOUNT,
    MINT_ACCOUNT,
    AccountKey,
    available,
    escrow,
    stake,
)
from coordinator.ledger.service import process_movement, transfer
from coordinator.log.format import GENESIS_PREV, compute_entry_leaf_hash
from coordinator.models import LedgerAccount, LogEntry, Posting
from coordinator.runtime import Runtime
from coordinator.settings import tiny_preset
from protocol.signing import generate_signing_key

PARTIES = ["a" * 64, "b" * 64, "c" * 64]
JOBS = ["1" * 64, "2" * 64]
amounts = st.integers(min_value=0, max_value=500)
parties = st.sampled_from(PARTIES)
jobs = st.sampled_from(JOBS)


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def open_database(self):
        self.tmp = tempfile.TemporaryDirectory()
        db = Database(f"sqlite:///{Path(self.tmp.name) / 'ledger.db'}")
        upgrade_database(db.engine)
        self.rt = Runtime(tiny_preset(), db, generate_signing_key(b"\x01" * 32), Clock())
        self.model: dict[AccountKey, int] = {}

    def teardown(self):
        if hasattr(self, "rt"):
            self.rt.db.dispose()
            self.tmp.cleanup()

    def _move(self, kind: str, source: AccountKey, target: AccountKey, amount: int) -> None:
        """Apply in the DB and in the model; an overdraft must fail and change nothing."""
        overdraft = source != MINT_ACCOUNT and self.model.get(source, 0) < amount
        try:
            self.rt.db.write(
                lambda s: process_movement(s, self.rt, kind, {}, transfer(source, target, amount))
            )
        except InsufficientFunds:
            assert overdraft, f"{kind} refused although {source} holds {self.model.get(source, 0)}"
            return
        assert not overdraft, f"{kind} overdrew {source}"
        self.model[source] = self.model.get(source, 0) - amount
        self.model[target] = self.model.get(target, 0) + amount

    @rule(who=parties, amount=amounts)
    def deposit(self, who, amount):
        self._move("deposit", MINT_ACCOUNT, available(who), amount)

    @rule(who=parties, job=jobs, amount=amounts)
    def escrow_bounty(self, who, job, amount):
        self._move("escrow", available(who), escrow(job), amount)

    @rule(who=parties, job=jobs, amount=amounts)
    def lock_stake(self, who, job, amount):
        self._move("stake", available(who), stake(who, job), amount)

    @rule(who=parties, to=parties, job=jobs, amount=amounts)
    def slash_to_party(self, who, to, job, amount):
        self._move("slash", stake(who, job), available(to), amount)

    @rule(who=parties, job=jobs, amount=amounts)
    def slash_burn(self, who, job, amount):
        self._move("slash-burn", stake(who, job), BURN_ACCOUNT, amount)

    @rule(to=parties, job=jobs, amount=amounts)
    def payout(self, to, job, amount):
        self._move("payout", escrow(job), available(to), amount)

    @rule(to=parties, job=jobs, amount=amounts)
    def refund(self, to, job, amount):
        self._move("refund", escrow(job), available(to), amount)

    @rule(who=parties, amount=amounts)
    def burn(self, who, amount):
        self._move("burn", available(who), BURN_ACCOUNT, amount)

    @rule(job=jobs, amount=amounts)
    def fee(self, job, amount):
        self._move("fee", escrow(job), FEES_ACCOUNT, amount)

    @precondition(lambda self: hasattr(self, "rt"))
    @invariant()
    def balances_match_model_conserve_and_stay_nonnegative(self):
        with self.rt.db.read() as session:
            rows = {
                AccountKey(a.kind, a.owner, a.job_id): a.balance
                for a in session.execute(select(LedgerAccount)).scalars()
            }
            posted = dict(
                session.execute(
                    select(Posting.account_id, func.sum(Posting.delta)).group_by(Posting.account_id)
                ).all()
            )
            by_id = dict(session.execute(select(LedgerAccount.id, LedgerAccount.balance)).all())
        assert {k: v for k, v in by_id.items() if v} == {k: v for k, v in posted.items() if v}
        assert sum(rows.values()) == 0
        assert all(v >= 0 for k, v in rows.items() if k != MINT_ACCOUNT)
        assert {k: v for k, v in rows.items() if v} == {k: v for k, v in self.model.items() if v}

    @precondition(lambda self: hasattr(self, "rt"))
    @invariant()
    def log_replays_to_the_balances(self):
        replayed: dict[str, int] = {}
        prev = GENESIS_PREV
        with self.rt.db.read() as session:
            for entry in session.execute(select(LogEntry).order_by(LogEntry.index)).scalars():
                body = json.loads(entry.body)
                assert body["prev"] == prev and sum(d for _, d in body["postings"]) == 0
                prev = compute_entry_leaf_hash(entry.body.encode()).hex()
                for account, delta in body["postings"]:
                    replayed[account] = replayed.get(account, 0) + delta
        assert {k: v for k, v in replayed.items() if v} == {
            str(k): v for k, v in self.model.items() if v
        }


LedgerMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestLedger = LedgerMachine.TestCase
