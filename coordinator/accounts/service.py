"""Accounts: an account is an ed25519 public key; its money lives in ledger accounts."""

from nacl.bindings import crypto_core_ed25519_is_valid_point
from sqlalchemy.orm import Session

from coordinator.accounts.schemas import AccountView, MovementResponse
from coordinator.errors import InvalidState
from coordinator.ledger import repository as ledger_repository
from coordinator.ledger.accounts import AVAILABLE, MINT_ACCOUNT, available
from coordinator.ledger.service import process_movement, transfer
from coordinator.runtime import Runtime
from protocol.errors import InvalidInput


def is_signable_key(public_key: str) -> bool:
    """True iff some private key can sign for `public_key`: a canonical ed25519 point of the
    prime-order subgroup. libsodium refuses the identity, the other low-order points and
    non-points, which `VerifyKey` accepts; money sent to those could never move again."""
    return crypto_core_ed25519_is_valid_point(bytes.fromhex(public_key))


def process_faucet(session: Session, rt: Runtime, owner: str, amount: int) -> MovementResponse:
    """Dev-only money from nowhere (a recorded mint, so the audit still balances)."""
    entry = process_movement(
        session,
        rt,
        "faucet",
        {"owner": owner, "amount": amount},
        transfer(MINT_ACCOUNT, available(owner), amount),
    )
    return MovementResponse(log_index=entry.index, available=entry.balances[available(owner)])


def process_transfer(
    session: Session, rt: Runtime, sender: str, to: str, amount: int
) -> MovementResponse:
    if sender == to:
        raise InvalidState("cannot transfer to yourself")
    if not is_signable_key(to):
        raise InvalidInput("not a public key anybody can sign for", "to")
    entry = process_movement(
        session,
        rt,
        "transfer",
        {"from": sender, "to": to, "amount": amount},
        transfer(available(sender), available(to), amount),
    )
    return MovementResponse(log_index=entry.index, available=entry.balances[available(sender)])


def get_account_view(session: Session, owner: str) -> AccountView:
    rows = ledger_repository.get_owner_accounts(session, owner)
    avail = next((r.balance for r in rows if r.kind == AVAILABLE), 0)
    held = {f"{r.kind}:{r.job_id}": r.balance for r in rows if r.kind != AVAILABLE}
    return AccountView(public_key=owner, available=avail, escrow_and_stakes=held)
