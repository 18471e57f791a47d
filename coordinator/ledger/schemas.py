from pydantic import BaseModel


class LedgerAccountView(BaseModel):
    id: int
    account: str  # "kind:owner:job", the key used in log postings
    balance: int


class LedgerPage(BaseModel):
    accounts: list[LedgerAccountView]
