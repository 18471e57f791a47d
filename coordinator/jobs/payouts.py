"""Who gets what when a job ends: pure functions from outcomes to ledger legs.

Rules (documented in docs/coordinator.md):
- settled: the solver gets its price from escrow and its stake back; each verifier that agreed
  gets `verifier_fee`; whatever is left in escrow goes back to the submitter.
- solver at fault (no-show or caught): its stake is split — half (rounded down) to the
  wronged party (the challenging verifier, or the submitter for a no-show), the rest burned;
  the escrow pays verifiers that did their work and refunds the submitter the remainder.
- a verifier at fault: its standing stake up to `amount` is split the same way, the wronged
  solver receiving half.
"""

from coordinator.ledger.accounts import BURN_ACCOUNT, AccountKey, available, escrow, stake
from coordinator.ledger.service import Leg

VICTIM_SHARE_NUM, VICTIM_SHARE_DEN = 1, 2


def compute_slash_legs(source: AccountKey, amount: int, victim: str | None) -> list[Leg]:
    """Move `amount` out of `source`: the victim's share to `victim` (if any), the rest burned."""
    to_victim = amount * VICTIM_SHARE_NUM // VICTIM_SHARE_DEN if victim else 0
    legs: list[Leg] = [(source, -amount), (BURN_ACCOUNT, amount - to_victim)]
    if to_victim:
        legs.append((available(victim), to_victim))
    return legs


def compute_escrow_split(job_id: str, escrow_balance: int, submitter: str,
                         payees: list[tuple[str, int]]) -> list[Leg]:
    """Pay `payees` from the job's escrow (capped by what is there), refund the rest."""
    legs: list[Leg] = []
    left = escrow_balance
    for owner, amount in payees:
        paid = min(amount, left)
        if paid:
            legs += [(escrow(job_id), -paid), (available(owner), paid)]
            left -= paid
    if left:
        legs += [(escrow(job_id), -left), (available(submitter), left)]
    return legs


def compute_stake_release(owner: str, job_id: str, amount: int) -> list[Leg]:
    return [(stake(owner, job_id), -amount), (available(owner), amount)] if amount else []
