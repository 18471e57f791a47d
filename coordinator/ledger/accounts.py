"""Ledger account keys: (kind, owner, job). Pure, shared by the server and the auditor."""

from dataclasses import dataclass

from protocol.errors import InvalidInput

AVAILABLE, ESCROW, STAKE, BURN, FEES, MINT = "available", "escrow", "stake", "burn", "fees", "mint"
KINDS = (AVAILABLE, ESCROW, STAKE, BURN, FEES, MINT)


@dataclass(frozen=True, order=True)
class AccountKey:
    kind: str
    owner: str = ""
    job_id: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.owner}:{self.job_id}"

    @property
    def may_go_negative(self) -> bool:
        return self.kind == MINT

    @classmethod
    def parse(cls, text: str) -> "AccountKey":
        parts = text.split(":")
        if len(parts) != 3 or parts[0] not in KINDS:
            raise InvalidInput(f"not an account key: {text!r}", "account")
        return cls(*parts)


def available(owner: str) -> AccountKey:
    return AccountKey(AVAILABLE, owner)


def escrow(job_id: str) -> AccountKey:
    return AccountKey(ESCROW, "", job_id)


def stake(owner: str, job_id: str = "") -> AccountKey:
    """A party's stake locked on one job, or (job_id "") a verifier's standing stake."""
    return AccountKey(STAKE, owner, job_id)


BURN_ACCOUNT = AccountKey(BURN)
FEES_ACCOUNT = AccountKey(FEES)
MINT_ACCOUNT = AccountKey(MINT)
