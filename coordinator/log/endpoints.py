from typing import Annotated

from fastapi import APIRouter, Depends, Query

from coordinator.auth import get_runtime
from coordinator.log import service
from coordinator.log.schemas import LogEntryView, LogPage, ProofView, TreeHeadView
from coordinator.problems import READ_PROBLEMS
from coordinator.runtime import Runtime

router = APIRouter(prefix="/v1/log", tags=["log"])
RT = Annotated[Runtime, Depends(get_runtime)]
Index = Annotated[int, Query(ge=0, le=2**62)]
Size = Annotated[int, Query(ge=1, le=2**62)]


@router.get("/head", response_model=TreeHeadView, responses=READ_PROBLEMS)
def get_head(rt: RT) -> TreeHeadView:
    """A freshly signed RFC 9162 tree head over the whole log."""
    with rt.db.read() as session:
        head = service.get_tree_head(session, rt.key, rt.clock.now())
    return TreeHeadView(
        size=head.size,
        timestamp_ms=head.timestamp_ms,
        root=head.root.hex(),
        signature=head.signature.hex(),
        public_key=head.public_key.hex(),
    )


@router.get("/entries", response_model=LogPage, responses=READ_PROBLEMS)
def get_entries(
    rt: RT, start: Index = 0, limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100
) -> LogPage:
    with rt.db.read() as session:
        rows = service.get_entries(session, start, limit)
        return LogPage(
            entries=[
                LogEntryView(
                    index=r.index, body=r.body, leaf_hash=r.leaf_hash, signature=r.signature
                )
                for r in rows
            ]
        )


@router.get("/proof/inclusion", response_model=ProofView, responses=READ_PROBLEMS)
def get_inclusion(rt: RT, index: Index, size: Size) -> ProofView:
    with rt.db.read() as session:
        return ProofView(proof=[p.hex() for p in service.get_inclusion_proof(session, index, size)])


@router.get("/proof/consistency", response_model=ProofView, responses=READ_PROBLEMS)
def get_consistency(rt: RT, old: Size, new: Size) -> ProofView:
    with rt.db.read() as session:
        return ProofView(proof=[p.hex() for p in service.get_consistency_proof(session, old, new)])
