"""Economics as pure functions, and a seeded simulation of every behaviour against honest play.

Closed form (design §6): a solver that fakes a fraction f of n segments saves f·C of compute cost
C and, with k segments sampled uniformly, is caught with probability p = 1 − (1 − f)^k ≥ f·k/k.
Caught, it forfeits the price P and its stake S. Its gain over honest work is
    f·C − p·(P + S)  <  0   whenever  S > C/k − P  (for k = 1, p = f),
so S > C/k (the design's rule, margin included) makes every partial or total fake lose money,
independent of n. A verifier is paid `verifier_fee` for replaying k of n segments (cost k/n·C);
forced errors — known-bad segments the protocol plants at rate φ — catch one that approves without
replaying: its stake is slashed, so laziness loses when stake > fee·(1 − φ)/φ (Truebit's jackpot
≥ compensation ÷ forced-error rate).
"""

import math
import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from fractions import Fraction

from nacl.signing import SigningKey

from protocol.assurance import (
    ASSURANCE_LEVELS,
    compute_cost_to_corrupt,
    compute_required_stake,
    compute_required_stake_for_plan,
    compute_sampling_plan,
)
from protocol.behaviours import SOLVER_BEHAVIOURS, VERIFIER_BEHAVIOURS, Behaviour
from protocol.dispute import SOLVER, VERIFIER, compute_initial_game
from protocol.standin import Player, StandinTrajectory, play_game

# --- the money rules the ledger applies (integer amounts; the simulator uses the same) ---------

VICTIM_SHARE = Fraction(1, 2)  # of a slash, to the wronged party (rounded down); the rest is burned


def compute_slash_split(amount: int) -> tuple[int, int]:
    """(to the wronged party, burned)."""
    to_victim = amount * VICTIM_SHARE.numerator // VICTIM_SHARE.denominator
    return to_victim, amount - to_victim


def compute_verifier_timeout_penalty(standing_stake: int, verifier_fee: int) -> int:
    """A verifier that misses a move loses up to the fee it would have earned."""
    return min(standing_stake, verifier_fee)


def compute_false_challenge_penalty(standing_stake: int, solver_stake: int, min_stake: int) -> int:
    """A verifier whose challenge lost forfeits standing stake up to what the solver risked."""
    return min(standing_stake, max(solver_stake, min_stake))


def compute_forced_error_jackpot(verifier_fee: int, rate_ppm: int) -> int:
    """What a verifier that recomputes a forced-error assignment earns: 2·fee ÷ φ (Truebit's
    jackpot ≥ compensation ÷ forced-error rate, as `compute_jackpot`), in integers."""
    return verifier_fee * 2 * 1_000_000 // rate_ppm if rate_ppm > 0 else 0


def compute_max_price(bounty: int, verifier_fee: int, num_verifiers: int) -> int:
    """A bid may ask for what the bounty holds beyond every verifier's fee."""
    return bounty - verifier_fee * num_verifiers


def compute_escrow_payments(escrow_balance: int, amounts: list[int]) -> tuple[list[int], int]:
    """Pay `amounts` in order from escrow, each capped by what is left; (paid, refund)."""
    paid, left = [], escrow_balance
    for amount in amounts:
        paid.append(min(amount, left))
        left -= paid[-1]
    return paid, left


class Outcome(StrEnum):
    """How a job ends for its parties, as far as money goes."""

    SETTLED = "settled"  # every check agreed
    SOLVER_NO_SHOW = "solver_no_show"  # the solver missed a deadline
    SOLVER_CAUGHT = "solver_caught"  # the challenger won the dispute
    FALSE_CHALLENGE = "false_challenge"  # the challenger lost; the job settles
    BOTH_WRONG = "both_wrong"  # the referee reproduced neither claim
    VERIFIER_TIMEOUT = "verifier_timeout"  # the challenger missed a move; the job settles


@dataclass(frozen=True)
class JobTerms:
    bounty: int
    price: int
    solver_stake: int
    verifier_fee: int
    min_stake: int = 0
    workers: int = 1  # verifiers other than the challenger that did their work
    challenger_stake: int = 0  # standing stake of the verifier the outcome is about


@dataclass(frozen=True)
class Payouts:
    """Net change of each party's money (balance plus locked stake) once the job has ended."""

    submitter: int
    solver: int
    workers: int  # together
    challenger: int
    burned: int


def compute_job_payouts(terms: JobTerms, outcome: Outcome) -> Payouts:
    """Who gains and loses what, from the moment the bounty is escrowed and the stake locked."""
    solver_fails = outcome in (Outcome.SOLVER_NO_SHOW, Outcome.SOLVER_CAUGHT, Outcome.BOTH_WRONG)
    challenger_paid = outcome in (Outcome.SETTLED, Outcome.SOLVER_CAUGHT)
    fees = [terms.verifier_fee] * (terms.workers + challenger_paid)
    paid, refund = compute_escrow_payments(
        terms.bounty, ([] if solver_fails else [terms.price]) + fees
    )
    price = 0 if solver_fails else paid.pop(0)
    challenger_fee = paid.pop() if challenger_paid else 0
    solver, challenger, submitter, burned = price, challenger_fee, refund - terms.bounty, 0
    if solver_fails:
        to_victim, burn = compute_slash_split(terms.solver_stake)
        solver, burned = solver - terms.solver_stake, burned + burn
        if outcome == Outcome.SOLVER_CAUGHT:
            challenger += to_victim
        else:
            submitter += to_victim
    if outcome == Outcome.VERIFIER_TIMEOUT:
        penalty = compute_verifier_timeout_penalty(terms.challenger_stake, terms.verifier_fee)
        to_victim, burn = compute_slash_split(penalty)
        challenger, submitter, burned = challenger - penalty, submitter + to_victim, burned + burn
    elif outcome in (Outcome.FALSE_CHALLENGE, Outcome.BOTH_WRONG):
        penalty = compute_false_challenge_penalty(
            terms.challenger_stake, terms.solver_stake, terms.min_stake
        )
        to_victim, burn = (
            compute_slash_split(penalty) if outcome == Outcome.FALSE_CHALLENGE else (0, penalty)
        )
        challenger, solver, burned = challenger - penalty, solver + to_victim, burned + burn
    return Payouts(submitter, solver, sum(paid), challenger, burned)


# --- simulation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    price: float = 1000.0
    compute_cost: float = 600.0  # C: the solver's cost of training honestly
    segments: int = 20  # n
    sampled: int = 1  # k segments replayed per verifier
    verifiers: int = 1
    forced_error_rate: float = 0.1  # φ
    stake_margin: float = 5 / 3  # S = margin · C / k

    @property
    def solver_stake(self) -> int:
        return round(
            compute_required_stake(self.compute_cost, max(1, self.sampled), self.stake_margin)
        )

    @property
    def verification_cost(self) -> float:
        return self.compute_cost * self.sampled / self.segments

    @property
    def verifier_fee(self) -> int:
        return round(compute_verifier_pay(self.verification_cost))

    @property
    def verifier_stake(self) -> int:
        if not self.sampled or not self.forced_error_rate:
            return 0  # no replay, or no planted error whose jackpot the stake must cover
        return round(compute_jackpot(self.verifier_fee, self.forced_error_rate))

    def compute_payouts(self, outcome: "Outcome") -> "Payouts":
        """The ledger's payouts for this market's job (bounty = price + every verifier's fee)."""
        terms = JobTerms(
            bounty=round(self.price) + self.verifiers * self.verifier_fee,
            price=round(self.price),
            solver_stake=self.solver_stake,
            verifier_fee=self.verifier_fee,
            workers=self.verifiers - 1,
            challenger_stake=self.verifier_stake,
        )
        return compute_job_payouts(terms, outcome)


def compute_verification_fraction(segments: int, sampled: int, verifiers: int) -> float:
    """Verifier compute ÷ solver compute."""
    return verifiers * sampled / segments


def compute_verifier_pay(verification_cost: float, markup: float = 2 / 3) -> float:
    return verification_cost * (1 + markup)


def compute_jackpot(compensation: float, forced_error_rate: float, margin: float = 2.0) -> float:
    """Penalty for approving a planted bad segment (and reward for flagging one):
    ≥ compensation ÷ forced-error rate, so approving blind never pays."""
    return margin * compensation / forced_error_rate


@dataclass(frozen=True)
class StrategyResult:
    name: str
    role: str
    honest: bool
    expected_profit: float
    gain_over_honest: float
    catch_rate: float


def _bad_segments(behaviour: Behaviour, market: Market, length: int) -> set[int]:
    return {
        i
        for i in range(market.segments)
        if behaviour.divergence(i * length, (i + 1) * length, i) is not None
    }


def _play_segment(
    solver_traj: StandinTrajectory,
    verifier_traj: StandinTrajectory,
    start: int,
    end: int,
    rng: random.Random,
    solver_policy: str = "follow",
) -> str | None:
    """The winner of the segment's game ("neither" when the referee backs neither claim), or
    None when both claim the same end root (a cheat the state size cannot show): no game."""
    if solver_traj.root(end) == verifier_traj.root(end):
        return None
    truth = StandinTrajectory(solver_traj.seed, solver_traj.num_chunks)
    keys = SigningKey(rng.randbytes(32)), SigningKey(rng.randbytes(32))
    game = compute_initial_game(
        game_id=rng.randbytes(32).hex(),
        solver_key=bytes(keys[0].verify_key).hex(),
        verifier_key=bytes(keys[1].verify_key).hex(),
        start_step=start,
        start_root=truth.root(start).hex(),
        end_step=end,
        solver_root=solver_traj.root(end).hex(),
        verifier_root=verifier_traj.root(end).hex(),
        num_chunks=truth.num_chunks,
        now=0,
        move_timeout=10,
    )
    final = play_game(
        game,
        Player(SOLVER, keys[0], solver_traj, solver_policy),
        Player(VERIFIER, keys[1], verifier_traj),
        truth,
    )
    return final.winner or "neither"


def _solver_dispute_loss_rate(
    behaviour: Behaviour, bad: list[int], length: int, trials: int, rng: random.Random
) -> float:
    """Share of stand-in games on its bad segments that the solver loses to an honest verifier."""
    if not bad:
        return 0.0
    lost = 0
    for _ in range(trials):
        segment = rng.choice(bad)
        seed, chunks = rng.randbytes(8), rng.randint(1, 64)
        start, end = segment * length, (segment + 1) * length
        fake = ((end, b"\xfa" * 32),) if behaviour.policy == "fake-root" else ()
        mine = StandinTrajectory(
            seed,
            chunks,
            None if fake else behaviour.divergence(start, end, segment),
            behaviour.name.encode(),
            fake,
        )
        winner = _play_segment(
            mine, StandinTrajectory(seed, chunks), start, end, rng, behaviour.policy
        )
        lost += winner not in (SOLVER, None)
    return lost / trials


def compute_detection_probability(segments: int, bad: int, sampled: int) -> float:
    """P(at least one of `sampled` uniformly drawn segments is bad)."""
    return 1 - math.comb(segments - bad, sampled) / math.comb(segments, sampled)


def simulate_solver(
    behaviour: Behaviour, market: Market, trials: int, rng: random.Random
) -> tuple[float, float]:
    """(expected profit, catch rate) against an honest verifier: exact sampling odds times the
    share of played dispute games the solver loses."""
    length = 100
    bad = sorted(_bad_segments(behaviour, market, length))
    spent = market.compute_cost * (1 - behaviour.saved_fraction * len(bad) / market.segments)
    catch = compute_detection_probability(
        market.segments, len(bad), market.sampled
    ) * _solver_dispute_loss_rate(behaviour, bad, length, trials, rng)
    paid, caught = (
        market.compute_payouts(o).solver for o in (Outcome.SETTLED, Outcome.SOLVER_CAUGHT)
    )
    return (1 - catch) * paid + catch * caught - spent, catch


def _verifier_challenge_loss_rate(trials: int, rng: random.Random) -> float:
    """Share of games a made-up root loses against honest work."""
    lost = 0
    for _ in range(trials):
        seed, chunks, start = rng.randbytes(8), rng.randint(1, 64), rng.randrange(10**6)
        end = start + rng.randint(1, 1000)
        made_up = StandinTrajectory(seed, chunks, fake_roots=((end, rng.randbytes(32)),))
        lost += _play_segment(StandinTrajectory(seed, chunks), made_up, start, end, rng) != VERIFIER
    return lost / trials


def simulate_verifier(
    behaviour: Behaviour, market: Market, trials: int, rng: random.Random
) -> tuple[float, float]:
    """(expected profit, catch rate) facing honest solvers and forced errors at rate φ."""
    fee, stake, phi = market.verifier_fee, market.verifier_stake, market.forced_error_rate
    cost = 0.0 if behaviour.saved_fraction == 1.0 else market.verification_cost
    if behaviour.policy == "no-show":
        return market.compute_payouts(Outcome.VERIFIER_TIMEOUT).challenger, 1.0
    if behaviour.claim == "start-root":  # approves everything: a planted bad segment slashes it
        return (1 - phi) * fee - phi * stake, phi
    if behaviour.honest:  # recomputes every forced error: paid, plus the jackpot at rate φ
        jackpot = compute_forced_error_jackpot(fee, round(phi * 1_000_000))
        return fee + phi * jackpot - cost, 0.0
    loss = _verifier_challenge_loss_rate(trials, rng)  # guessed or made-up roots must be defended
    paid, lost = (
        market.compute_payouts(o).challenger for o in (Outcome.SETTLED, Outcome.FALSE_CHALLENGE)
    )
    return (1 - loss) * paid + loss * lost - cost, loss


def simulate_market(market: Market, trials: int = 200, seed: int = 0) -> list[StrategyResult]:
    """Every built-in behaviour on the same random draws (common random numbers), so the gain
    over honest play is not sampling noise."""
    results: list[StrategyResult] = []
    for role, behaviours, simulate in (
        (SOLVER, SOLVER_BEHAVIOURS, simulate_solver),
        (VERIFIER, VERIFIER_BEHAVIOURS, simulate_verifier),
    ):
        honest_profit = simulate(behaviours[0], market, trials, random.Random(seed))[0]
        for b in behaviours:
            profit, catch = simulate(b, market, trials, random.Random(seed))
            results.append(
                StrategyResult(
                    b.name,
                    role,
                    b.honest,
                    round(profit, 3),
                    round(profit - honest_profit, 3),
                    round(catch, 4),
                )
            )
    return results


def compute_assurance_table(market: Market) -> list[dict]:
    """Every built-in assurance level at the market's segment count: what a one-step
    perturbation's odds are, what verification costs, and what corrupting one model costs.

    `cost_to_corrupt` is taken at the market's price and at the stake that level's own plan
    requires — S = margin·C/k with the level's k (`compute_required_stake_for_plan`), rounded
    like `Market.solver_stake` — not at the market's stake; `stake` reports it. None (null in
    JSON): every segment is replayed, so no corruption survives."""
    rows = []
    for name in ASSURANCE_LEVELS:
        plan = compute_sampling_plan(market.segments, level=name)
        stake = round(
            compute_required_stake_for_plan(plan, market.compute_cost, market.stake_margin)
        )
        cost = compute_cost_to_corrupt(plan, market.price, stake)
        rows.append(
            {
                "level": name,
                "detection_probability": round(plan.detection_probability, 6),
                "num_segments": plan.num_segments,
                "total_segments": plan.total_segments,
                "num_verifiers": plan.num_verifiers,
                "verification_fraction": round(plan.verification_fraction, 6),
                "single_step_survival": round(plan.single_step_survival, 6),
                "stake": stake,
                "cost_to_corrupt": None if cost is None else round(cost, 3),
            }
        )
    return rows


def compute_summary(market: Market, results: list[StrategyResult]) -> dict:
    """The simulation's verdict. Besides the per-strategy results: `assurance`, every built-in
    level at this market's segment count (`compute_assurance_table`: its cost to corrupt uses the
    market's price and the stake the level's plan requires, margin·C/k), and `deviations`, every
    non-honest strategy with its gain over honest play (all < 0 for `ok`)."""
    # honest play earns; every deviation earns less than honest play (a solver that cheats on
    # one segment still nets most of the price, but less than by doing the work)
    ok = all(r.expected_profit > 0 if r.honest else r.gain_over_honest < 0 for r in results)
    return {
        "strategies": [asdict(r) for r in results],
        "stake_multiple": round(market.solver_stake / market.price, 4),
        "verifier_stake_multiple": round(market.verifier_stake / market.price, 4),
        "verification_fraction": compute_verification_fraction(
            market.segments, market.sampled, market.verifiers
        ),
        "market": asdict(market),
        "ok": ok,
        "assurance": compute_assurance_table(market),
        "deviations": [
            {"role": r.role, "name": r.name, "gain_over_honest": r.gain_over_honest}
            for r in results
            if not r.honest
        ],
    }
