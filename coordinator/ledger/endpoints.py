from typing import Annotated

from fastapi import APIRouter, Depends, Query

from coordinator.auth import get_runtime
from coordinator.ledger import repository
from coordinator.ledger.accounts import AccountKey
from coordinator.ledger.schemas import LedgerAccountView, LedgerPage
from coordinator.problems import READ_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import MAX_ROW_ID

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])
RT = Annotated[Runtime, Depends(get_runtime)]


@router.get("/accounts", response_model=LedgerPage, responses=READ_PROBLEMS)
def get_ledger_accounts(
    rt: RT,
    after: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> LedgerPage:
    """Every ledger balance, in id order (keyset pagination: pass the last id as `after`)."""
    with rt.db.read() as session:
        rows = repository.get_accounts_page(session, after, limit)
        return LedgerPage(
            accounts=[
                LedgerAccountView(
                    id=r.id, account=str(AccountKey(r.kind, r.owner, r.job_id)), balance=r.balance
                )
                for r in rows
            ]
        )
