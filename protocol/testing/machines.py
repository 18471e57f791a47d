"""Stateful property tests (hypothesis `RuleBasedStateMachine`) over the pure game and over the
ledger's money rules. Subclass either to add your own moves as `@rule` methods; the invariants
run after each of them. Run one with `MyMachine.TestCase` under pytest.

    class MyGame(DisputeGameMachine):
        @rule()
        def solver_posts_zeros(self):
            if self.game.phase == "steps" and self.game.turn == "solver":
                self.submit(self.sign("solver", "dissect", {"roots": ["00" * 32]}))
"""

import dataclasses
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol import dispute
from protocol.behaviours import BUILTIN
from protocol.dispute import (
    CHUNKS,
    OVER,
    RULING,
    SOLVER,
    STATE,
    STEPS,
    VERIFIER,
    Move,
    compute_rounds_bound,
    sign_move,
)
from protocol.economics import JobTerms, Outcome, compute_job_payouts
from protocol.standin import Divergence, Player
from protocol.testing.games import (
    SOLVER_KEY,
    VERIFIER_KEY,
    GameCase,
    build_solver_trajectory,
    build_truth,
    build_verifier_trajectory,
    start_case,
)
from protocol.testing.strategies import arities, chunk_counts, segments

KEYS = {SOLVER: SOLVER_KEY, VERIFIER: VERIFIER_KEY}


def require(condition: object, message: object) -> None:
    """An invariant of the machine: AssertionError when broken, even under `python -O`."""
    if not condition:
        raise AssertionError(message)


PHASES = {STEPS, CHUNKS, STATE, RULING, OVER}


class DisputeGameMachine(RuleBasedStateMachine):
    """An honest verifier against a solver that went wrong at one step, under any interleaving
    of good moves, illegal moves (out of turn, stale round, forged signature, malformed payload)
    and missed deadlines. Illegal moves must be refused and change nothing; a party loses only by
    being wrong or late; every game ends within the rounds bound."""

    rules_module = dispute  # point at a modified copy of protocol.dispute to test other rules
    max_length = 10**4  # the longest disputed segment drawn

    @initialize(data=st.data())
    def open_game(self, data):
        start, length = data.draw(segments(max_length=self.max_length), label="segment")
        chunks = data.draw(chunk_counts(), label="chunks")
        arity = data.draw(arities(), label="arity")
        bad_step = data.draw(st.integers(start + 1, start + length), label="bad step")
        bad_chunk = data.draw(st.integers(0, chunks - 1), label="bad chunk")
        self.case = GameCase(
            start=start,
            length=length,
            chunks=chunks,
            arity=arity,
            solver=BUILTIN[(SOLVER, "perturb-step")],
            verifier=BUILTIN[(VERIFIER, "honest")],
            seed=data.draw(st.binary(min_size=8, max_size=8), label="seed"),
            solver_divergence=Divergence(bad_step, None, (bad_chunk, bad_chunk + 1)),
        )
        self.game = start_case(self.case, self.rules_module)
        self.players = {
            SOLVER: Player(SOLVER, SOLVER_KEY, build_solver_trajectory(self.case)),
            VERIFIER: Player(VERIFIER, VERIFIER_KEY, build_verifier_trajectory(self.case)),
        }
        self.now, self.late = 0, set()

    # --- helpers for subclasses -----------------------------------------------------------------
    def sign(self, party: str, kind: str, payload: dict) -> Move:
        return sign_move(KEYS[party], self.game, party=party, kind=kind, payload=payload)

    def submit(self, move: Move) -> bool:
        """Apply `move` if legal (True); an illegal one must leave the game exactly as it was."""
        before = self.game
        try:
            self.game = self.rules_module.process_move(self.game, move, self.now)
        except self.rules_module.IllegalMove:
            require(self.game == before, "a refused move changed the game")
            return False
        return True

    # --- rules ----------------------------------------------------------------------------------
    @precondition(lambda self: self.game.phase in (STEPS, CHUNKS))
    @rule()
    def party_to_move_plays_its_trajectory(self):
        self.now += 1
        move = self.players[self.game.turn].next_move(self.game)
        require(move is not None and self.submit(move), "a truthful move was refused")

    @precondition(lambda self: self.game.phase in (STEPS, CHUNKS))
    @rule(change=st.sampled_from(["party", "round", "signature", "payload"]))
    def illegal_move_is_refused(self, change):
        move = self.players[self.game.turn].next_move(self.game)
        if change == "party":
            other = VERIFIER if move.party == SOLVER else SOLVER
            move = dataclasses.replace(move, party=other)
        elif change == "round":
            move = dataclasses.replace(move, round=move.round + 1)
        elif change == "signature":
            move = dataclasses.replace(move, signature="00" * 64)
        else:
            move = self.sign(move.party, move.kind, {"garbage": True})
        require(not self.submit(move), f"a move with a wrong {change} was accepted")

    @precondition(lambda self: self.game.phase in (STEPS, CHUNKS, STATE))
    @rule()
    def deadline_passes(self):
        late = self.game.turn
        self.now = self.game.deadline
        self.game = self.rules_module.process_deadline(self.game, self.now)
        require(self.game.phase == OVER and self.game.winner != late, "lateness went unpunished")
        self.late.add(late)

    @precondition(lambda self: self.game.phase == STATE)
    @rule()
    def solver_supplies_the_agreed_state(self):
        self.game = self.rules_module.process_state_supplied(self.game, self.now)

    @precondition(lambda self: self.game.phase == RULING)
    @rule()
    def referee_rules(self):
        truth = build_truth(self.case).chunk_hashes(self.game.hi)[self.game.chunk]
        self.game = self.rules_module.process_ruling(self.game, truth)

    @precondition(lambda self: self.game.phase == OVER)
    @rule(party=st.sampled_from([SOLVER, VERIFIER]))
    def an_ended_game_stays_ended(self, party):
        self.now += 1
        move = self.sign(party, "dissect" if party == SOLVER else "choose", {})
        require(not self.submit(move), "a move was accepted after the game ended")
        over = self.game
        require(
            self.rules_module.process_deadline(over, self.now + 10**6) == over,
            "an ended game changed at a deadline",
        )

    # --- invariants -----------------------------------------------------------------------------
    @invariant()
    def the_game_is_well_formed(self):
        require(self.game.phase in PHASES, f"unknown phase {self.game.phase}")
        require(
            self.case.start <= self.game.lo < self.game.hi <= self.case.end,
            "steps left the segment",
        )
        require(
            self.game.moves
            <= compute_rounds_bound(self.case.length, self.case.chunks, self.case.arity),
            "more moves than the rounds bound",
        )

    @invariant()
    def only_the_wrong_or_the_late_lose(self):
        if self.game.phase == OVER and VERIFIER not in self.late:
            require(self.game.winner == VERIFIER, f"the honest verifier lost: {self.game.reason}")


PARTIES = ("submitter", "solver", "worker", "challenger")
amounts = st.integers(0, 10**6)


class LedgerRulesMachine(RuleBasedStateMachine):
    """The money rules (`protocol.economics.compute_job_payouts`) on in-memory books: jobs open
    (the bounty escrowed, the solver's and the challenger's stakes locked) and end in any outcome.
    Money is never created or lost (burns are counted), no balance goes negative, a solver
    loses its stake exactly when it is at fault, and a party that did its work is never paid less
    than nothing."""

    def __init__(self):
        super().__init__()
        self.books: dict[str, int] = dict.fromkeys(PARTIES, 0)
        self.deposited, self.burned = 0, 0
        self.open_jobs: list[JobTerms] = []

    def locked(self) -> int:
        return sum(t.bounty + t.solver_stake + t.challenger_stake for t in self.open_jobs)

    @rule(party=st.sampled_from(PARTIES), amount=amounts)
    def deposit(self, party, amount):
        self.books[party] += amount
        self.deposited += amount

    @rule(price=amounts, fee=st.integers(0, 10**4), workers=st.integers(0, 4), data=st.data())
    def open_job(self, price, fee, workers, data):
        bounty = price + fee * (workers + 1)
        stake = data.draw(st.integers(0, 10**6), label="solver stake")
        standing = data.draw(st.integers(0, 10**6), label="challenger stake")
        needs = {"submitter": bounty, "solver": stake, "challenger": standing}
        if any(self.books[p] < amount for p, amount in needs.items()):
            return  # the ledger refuses a job its parties cannot fund
        for party, amount in needs.items():
            self.books[party] -= amount
        min_stake = data.draw(st.integers(0, stake), label="min stake")
        self.open_jobs.append(JobTerms(bounty, price, stake, fee, min_stake, workers, standing))

    @precondition(lambda self: self.open_jobs)
    @rule(outcome=st.sampled_from(list(Outcome)), data=st.data())
    def end_job(self, outcome, data):
        terms = self.open_jobs.pop(data.draw(st.integers(0, len(self.open_jobs) - 1)))
        paid = compute_job_payouts(terms, outcome)
        back = {
            "submitter": terms.bounty + paid.submitter,
            "solver": terms.solver_stake + paid.solver,
            "worker": paid.workers,
            "challenger": terms.challenger_stake + paid.challenger,
        }
        require(min(*back.values(), paid.burned) >= 0, f"{outcome} pays out more than is locked")
        for party, amount in back.items():
            self.books[party] += amount
        self.burned += paid.burned
        self.check_fault_rules(terms, outcome, paid)

    def check_fault_rules(self, terms: JobTerms, outcome: Outcome, paid: Any) -> None:
        solver_at_fault = outcome in (
            Outcome.SOLVER_NO_SHOW,
            Outcome.SOLVER_CAUGHT,
            Outcome.BOTH_WRONG,
        )
        if solver_at_fault:
            require(paid.solver == -terms.solver_stake, "a solver at fault keeps part of its stake")
        else:
            require(paid.solver >= 0, f"a solver not at fault loses money on {outcome}")
        require(paid.workers >= 0, "verifiers that did their work lose money")

    @invariant()
    def money_is_conserved(self):
        total = sum(self.books.values()) + self.locked() + self.burned
        require(total == self.deposited, f"books hold {total}, {self.deposited} deposited")

    @invariant()
    def no_balance_is_negative(self):
        require(min(self.books.values()) >= 0, self.books)
