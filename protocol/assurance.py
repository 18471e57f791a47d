"""Assurance levels: how much of a job the submitter pays to have replayed, and what that buys.

A job is cut into n segments; verification replays k of them, drawn uniformly without
replacement, by each of v verifiers. A solver that deviates on a single step (the cheapest
corruption there is: `perturb-step`) puts its deviation in exactly one segment, so one draw of k
segments catches it with probability k/n and misses it with probability 1 − k/n — no matter how
cleverly the step was chosen. That one-step survival is the honest headline number of a level;
bigger deviations touch more segments and are caught more often (`economics`).

Pure: this module imports only `protocol.errors` and the standard library, so `economics` (and
anything else) may import it without an import circle.
"""

import math
from dataclasses import dataclass
from fractions import Fraction

from protocol.errors import InvalidInput


@dataclass(frozen=True)
class AssuranceLevel:
    name: str
    detection: float  # target probability of catching a one-step deviation
    num_verifiers: int


# Ordered from cheapest to strongest; every target and verifier count is non-decreasing.
ASSURANCE_LEVELS: dict[str, AssuranceLevel] = {
    level.name: level
    for level in (
        AssuranceLevel("basic", 0.05, 1),  # default: 1 of 20 segments, 5% of training compute
        AssuranceLevel("standard", 0.25, 1),
        AssuranceLevel("high", 0.5, 2),
        AssuranceLevel("full", 0.99, 2),
    )
}
DEFAULT_ASSURANCE = "basic"


@dataclass(frozen=True)
class SamplingPlan:
    level: str | None  # None: a custom detection target
    num_segments: int  # k: segments replayed (by each verifier)
    num_verifiers: int  # v
    total_segments: int  # n
    detection_probability: float  # k/n: a one-step deviation is in exactly one segment
    single_step_survival: float  # 1 − k/n
    verification_fraction: float  # v·k/n: verifier compute ÷ training compute


def describe_sampling(total_segments: int, num_segments: int, num_verifiers: int) -> SamplingPlan:
    """What explicitly chosen counts amount to (no level); with no verifier nothing is checked."""
    k = min(num_segments, total_segments) if num_verifiers > 0 else 0
    n = max(1, total_segments)
    return SamplingPlan(None, k, num_verifiers, n, k / n, 1 - k / n, num_verifiers * k / n)


def compute_sampling_plan(
    total_segments: int,
    level: str | None = None,
    detection: float | None = None,
    num_verifiers: int | None = None,
) -> SamplingPlan:
    """The fewest segments k (1 ≤ k ≤ n) with k/n ≥ the target detection probability of a
    built-in `level` or of an explicit `detection` (give one of them; neither means
    DEFAULT_ASSURANCE). `num_verifiers` overrides the level's count; a custom detection target
    gets 1 verifier unless told otherwise."""
    if isinstance(total_segments, bool) or not isinstance(total_segments, int):
        raise InvalidInput("must be an integer", field="segments")
    if total_segments < 1:
        raise InvalidInput(f"need at least 1 segment, got {total_segments}", field="segments")
    if level is not None and detection is not None:
        raise InvalidInput("give an assurance level or a detection target, not both", "assurance")
    verifiers = 1
    if detection is None:
        name = DEFAULT_ASSURANCE if level is None else level
        if not isinstance(name, str) or name not in ASSURANCE_LEVELS:
            raise InvalidInput(
                f"unknown assurance level {name!r}; one of {', '.join(ASSURANCE_LEVELS)}",
                field="assurance",
            )
        level, detection, verifiers = (
            name,
            ASSURANCE_LEVELS[name].detection,
            ASSURANCE_LEVELS[name].num_verifiers,
        )
    elif (
        isinstance(detection, bool)
        or not isinstance(detection, int | float)
        or not 0 < detection <= 1
    ):
        raise InvalidInput(
            f"detection probability must be in (0, 1], got {detection!r}", field="detection"
        )
    if num_verifiers is not None:
        if isinstance(num_verifiers, bool) or not isinstance(num_verifiers, int):
            raise InvalidInput("must be an integer", field="verifiers")
        if num_verifiers < 1:
            raise InvalidInput(f"need at least 1 verifier, got {num_verifiers}", field="verifiers")
        verifiers = num_verifiers
    n = total_segments
    # 1e-9 absorbs float error (0.05·20 must give 1, not 2)
    k = max(1, min(n, math.ceil(detection * n - 1e-9)))
    return SamplingPlan(
        level=level,
        num_segments=k,
        num_verifiers=verifiers,
        total_segments=n,
        detection_probability=k / n,
        single_step_survival=1 - k / n,
        verification_fraction=verifiers * k / n,
    )


def compute_cost_to_corrupt(plan: SamplingPlan, price: float, stake: float) -> float | None:
    """What an attacker expects to lose per corrupted model it gets accepted, by perturbing one
    step (the deviation a plan is least likely to catch).

    Each attempt is caught with probability p = k/n (the plan's detection probability) and then
    forfeits the price P it would have been paid and its stake S; it survives with 1 − p. An
    attacker retrying until one corrupted model is accepted makes a geometric number of attempts,
    of which on average p/(1 − p) are caught, so it expects to lose

        p/(1 − p) · (P + S)

    per corrupted model delivered. The training compute is not counted: a one-step perturbation
    trains the whole job anyway, and an honest solver spends it too — so this is a lower bound
    on the attacker's cost (any extra compute or setup only adds to it). None when the plan
    replays every segment (survival 0): no attempt can succeed, at any price.
    """
    survival = plan.single_step_survival
    if survival <= 0:
        return None
    return plan.detection_probability / survival * (price + stake)


def compute_required_stake(compute_cost: float, sampled: int, margin: float = 5 / 3) -> float:
    """S > C/k: cheating on any share of the job has negative expected gain (design §6)."""
    return margin * compute_cost / sampled


def compute_required_stake_for_plan(
    plan: SamplingPlan, compute_cost: float, margin: float = 5 / 3
) -> float:
    """The solver stake a plan needs: margin·C/k with the plan's k."""
    return compute_required_stake(compute_cost, plan.num_segments, margin)


# --- the job terms the coordinator enforces at submission (integers) ---------------------------

STAKE_MARGIN = Fraction(5, 3)  # S ≥ margin · C / k (design §6), as in `compute_required_stake`
VERIFIER_MARKUP = Fraction(2, 3)  # a verifier earns its replay cost plus this share


def compute_min_solver_stake(max_price: int, sampled: int, margin: Fraction = STAKE_MARGIN) -> int:
    """The least stake that makes faking any share of the work lose money when `sampled`
    segments are replayed: margin · C / k, with the highest price a bid may ask standing in for
    the compute cost C (a solver that bids P expects to spend no more than P)."""
    return math.ceil(margin * max_price / max(1, sampled))


def compute_default_verifier_fee(
    bounty: int, sampled: int, total: int, verifiers: int, minimum: int
) -> int:
    """A fee that pays one verifier's replay of k of n segments with its markup, taking the
    solver's price as the compute cost: fee = (1 + markup)·(k/n)·(bounty − v·fee), solved for
    fee; at least `minimum`. A bounty of 1000 with k/n = 1/20 and one verifier: 76."""
    share = (1 + VERIFIER_MARKUP) * Fraction(sampled, max(1, total))
    return max(minimum, math.floor(share * bounty / (1 + verifiers * share)))


def compute_min_verifier_bond(verifier_fee: int, bond_multiple: int) -> int:
    """The standing stake a verifier needs to be drawn for a job paying `verifier_fee`: its
    exposure on the job (a missed move costs up to the fee, a false challenge up to the
    solver's stake) is backed by a bond sized from what it can earn there, never from the job's
    stake alone, so a verifier cannot grief a well-paid job from a token bond."""
    return verifier_fee * bond_multiple
