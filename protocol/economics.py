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

from nacl.signing import SigningKey

from protocol.behaviours import SOLVER_BEHAVIOURS, VERIFIER_BEHAVIOURS, Behaviour
from protocol.dispute import SOLVER, VERIFIER, compute_initial_game
from protocol.standin import Player, StandinTrajectory, play_game

VICTIM_SHARE = 0.5  # of a slash, to the wronged party; the rest is burned


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
    def solver_stake(self) -> float:
        return compute_required_stake(self.compute_cost, max(1, self.sampled), self.stake_margin)

    @property
    def verification_cost(self) -> float:
        return self.compute_cost * self.sampled / self.segments

    @property
    def verifier_fee(self) -> float:
        return compute_verifier_pay(self.verification_cost)

    @property
    def verifier_stake(self) -> float:
        return compute_jackpot(self.verifier_fee, self.forced_error_rate) if self.sampled else 0.0


def compute_required_stake(compute_cost: float, sampled: int, margin: float = 5 / 3) -> float:
    """S > C/k: cheating on any share of the job has negative expected gain."""
    return margin * compute_cost / sampled


def compute_verification_fraction(segments: int, sampled: int, verifiers: int) -> float:
    """Verifier compute ÷ solver compute."""
    return verifiers * sampled / segments


def compute_verifier_pay(verification_cost: float, markup: float = 2 / 3) -> float:
    return verification_cost * (1 + markup)


def compute_slash_split(amount: float) -> tuple[float, float]:
    """(to the wronged party, burned)."""
    return amount * VICTIM_SHARE, amount * (1 - VICTIM_SHARE)


def compute_jackpot(compensation: float, forced_error_rate: float, margin: float = 2.0) -> float:
    """Penalty for approving a planted bad segment (and reward for flagging one):
    ≥ compensation ÷ forced-error rate, so approving blind never pays."""
    return margin * compensation / forced_error_rate


def compute_no_show_penalty(verifier_fee: float) -> float:
    return verifier_fee


# --- simulation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyResult:
    name: str
    role: str
    honest: bool
    expected_profit: float
    gain_over_honest: float
    catch_rate: float


def _bad_segments(behaviour: Behaviour, market: Market, length: int) -> set[int]:
    return {i for i in range(market.segments)
            if behaviour.divergence(i * length, (i + 1) * length, i) is not None}


def _play_segment(solver_traj: StandinTrajectory, verifier_traj: StandinTrajectory, start: int, end: int,
                  rng: random.Random, solver_policy: str = "follow") -> str:
    truth = StandinTrajectory(solver_traj.seed, solver_traj.num_chunks)
    keys = SigningKey(rng.randbytes(32)), SigningKey(rng.randbytes(32))
    game = compute_initial_game(rng.randbytes(32).hex(), bytes(keys[0].verify_key).hex(),
                                bytes(keys[1].verify_key).hex(), start, truth.root(start).hex(), end,
                                solver_traj.root(end).hex(), verifier_traj.root(end).hex(),
                                truth.num_chunks, 0, 10)
    final = play_game(game, Player(SOLVER, keys[0], solver_traj, solver_policy),
                      Player(VERIFIER, keys[1], verifier_traj), truth)
    return final.winner or "neither"


def _solver_dispute_loss_rate(behaviour: Behaviour, bad: list[int], length: int, trials: int,
                              rng: random.Random) -> float:
    """Share of stand-in games on its bad segments that the solver loses to an honest verifier."""
    if not bad:
        return 0.0
    lost = 0
    for _ in range(trials):
        segment = rng.choice(bad)
        seed, chunks = rng.randbytes(8), rng.randint(1, 64)
        start, end = segment * length, (segment + 1) * length
        fake = ((end, b"\xfa" * 32),) if behaviour.policy == "fake-root" else ()
        mine = StandinTrajectory(seed, chunks, None if fake else behaviour.divergence(start, end, segment),
                                 behaviour.name.encode(), fake)
        lost += _play_segment(mine, StandinTrajectory(seed, chunks), start, end, rng, behaviour.policy) != SOLVER
    return lost / trials


def compute_detection_probability(segments: int, bad: int, sampled: int) -> float:
    """P(at least one of `sampled` uniformly drawn segments is bad)."""
    return 1 - math.comb(segments - bad, sampled) / math.comb(segments, sampled)


def simulate_solver(behaviour: Behaviour, market: Market, trials: int, rng: random.Random) -> tuple[float, float]:
    """(expected profit, catch rate) against an honest verifier: exact sampling odds times the
    share of played dispute games the solver loses."""
    length = 100
    bad = sorted(_bad_segments(behaviour, market, length))
    spent = market.compute_cost * (1 - behaviour.saved_fraction * len(bad) / market.segments)
    catch = compute_detection_probability(market.segments, len(bad), market.sampled) \
        * _solver_dispute_loss_rate(behaviour, bad, length, trials, rng)
    return (1 - catch) * market.price - catch * market.solver_stake - spent, catch


def _verifier_challenge_loss_rate(trials: int, rng: random.Random) -> float:
    """Share of games a made-up root loses against honest work."""
    lost = 0
    for _ in range(trials):
        seed, chunks, start = rng.randbytes(8), rng.randint(1, 64), rng.randrange(10**6)
        end = start + rng.randint(1, 1000)
        made_up = StandinTrajectory(seed, chunks, fake_roots=((end, rng.randbytes(32)),))
        lost += _play_segment(StandinTrajectory(seed, chunks), made_up, start, end, rng) != VERIFIER
    return lost / trials


def simulate_verifier(behaviour: Behaviour, market: Market, trials: int, rng: random.Random) -> tuple[float, float]:
    """(expected profit, catch rate) facing honest solvers and forced errors at rate φ."""
    fee, stake, phi = market.verifier_fee, market.verifier_stake, market.forced_error_rate
    cost = 0.0 if behaviour.saved_fraction == 1.0 else market.verification_cost
    if behaviour.policy == "no-show":
        return -compute_no_show_penalty(fee), 1.0
    if behaviour.claim == "start-root":  # approves everything: a planted bad segment slashes it
        return (1 - phi) * fee - phi * stake, phi
    if behaviour.honest:  # flags every planted segment: paid, plus its share of the jackpot
        return fee + phi * compute_slash_split(compute_jackpot(fee, phi))[0] - cost, 0.0
    loss = _verifier_challenge_loss_rate(trials, rng)  # guessed or made-up roots must be defended
    return (1 - loss) * fee - loss * stake - cost, loss


def simulate_market(market: Market, trials: int = 200, seed: int = 0) -> list[StrategyResult]:
    """Every built-in behaviour on the same random draws (common random numbers), so the gain
    over honest play is not sampling noise."""
    results: list[StrategyResult] = []
    for role, behaviours, simulate in ((SOLVER, SOLVER_BEHAVIOURS, simulate_solver),
                                       (VERIFIER, VERIFIER_BEHAVIOURS, simulate_verifier)):
        honest_profit = simulate(behaviours[0], market, trials, random.Random(seed))[0]
        for b in behaviours:
            profit, catch = simulate(b, market, trials, random.Random(seed))
            results.append(StrategyResult(b.name, role, b.honest, round(profit, 3),
                                          round(profit - honest_profit, 3), round(catch, 4)))
    return results


def compute_summary(market: Market, results: list[StrategyResult]) -> dict:
    # honest play earns; every deviation earns less than honest play (a solver that cheats on
    # one segment still nets most of the price, but less than by doing the work)
    ok = all(r.expected_profit > 0 if r.honest else r.gain_over_honest < 0 for r in results)
    return {"strategies": [asdict(r) for r in results],
            "stake_multiple": round(market.solver_stake / market.price, 4),
            "verifier_stake_multiple": round(market.verifier_stake / market.price, 4),
            "verification_fraction": compute_verification_fraction(market.segments, market.sampled,
                                                                   market.verifiers),
            "market": asdict(market), "ok": ok}
