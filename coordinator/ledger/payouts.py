"""Ledger legs for the money rules of `protocol.economics`: which accounts a payout moves.

The amounts (slash split, escrow order and caps, penalties) are decided there, once, for the
ledger and the simulator alike; this module only names the accounts.
"""

from coordinator.ledger.accounts import BURN_ACCOUNT, AccountKey, available, escrow, stake
from coordinator.ledger.service import Leg
from protocol.economics import compute_escrow_payments, compute_slash_split


def compute_slash_legs(source: AccountKey, amount: int, victim: str | None) -> list[Leg]:
    """Move `amount` out of `source`: the victim's share to `victim` (if any), the rest burned."""
    to_victim, burned = compute_slash_split(amount) if victim else (0, amount)
    legs: list[Leg] = [(source, -amount), (BURN_ACCOUNT, burned)]
    if to_victim:
        legs.append((available(victim), to_victim))
    return legs


def compute_escrow_split(
    job_id: str, escrow_balance: int, submitter: str, payees: list[tuple[str, int]]
) -> list[Leg]:
    """Pay `payees` from the job's escrow in order (capped by what is there), refund the rest."""
    paid, refund = compute_escrow_payments(escrow_balance, [amount for _, amount in payees])
    legs: list[Leg] = []
    for (owner, _), amount in zip(payees, paid, strict=True):
        if amount:
            legs += [(escrow(job_id), -amount), (available(owner), amount)]
    if refund:
        legs += [(escrow(job_id), -refund), (available(submitter), refund)]
    return legs


def compute_stake_release(owner: str, job_id: str, amount: int) -> list[Leg]:
    return [(stake(owner, job_id), -amount), (available(owner), amount)] if amount else []
