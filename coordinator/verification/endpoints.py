from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from coordinator.auth import Signed, execute_signed, get_runtime
from coordinator.problems import READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import MAX_ROW_ID
from coordinator.transitions import process_verification_reveal
from coordinator.verification import repository, service
from coordinator.verification.schemas import (
    AssignmentPage,
    AssignmentView,
    ChallengeRequest,
    CommitVerificationRequest,
    RegisterVerifierRequest,
    RevealVerificationRequest,
    VerifierView,
    WithdrawStakeRequest,
)

router = APIRouter(prefix="/v1", tags=["verification"])
RT = Annotated[Runtime, Depends(get_runtime)]
AssignmentId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
JobIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


@router.post("/verifiers", response_model=VerifierView, responses=WRITE_PROBLEMS)
def post_verifier(body: RegisterVerifierRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: service.process_register_verifier(s, rt, signed.public_key, body)
    )


@router.post("/verifiers/withdraw", response_model=VerifierView, responses=WRITE_PROBLEMS)
def post_withdraw(body: WithdrawStakeRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: service.process_withdraw_stake(s, rt, signed.public_key, body.amount)
    )


@router.post("/jobs/{job_id}/challenges", response_model=AssignmentView, responses=WRITE_PROBLEMS)
def post_challenge(job_id: JobIdPath, body: ChallengeRequest, signed: Signed, rt: RT) -> Response:
    """Open the challenge window: a bonded verifier of the job's profile replays a segment of its
    own choice (a volunteer assignment: the same moves as a drawn one, no fee, the victim's
    share of a slashed solver if it wins)."""
    return execute_signed(
        rt,
        signed,
        lambda s: service.process_challenge(s, rt, signed.public_key, job_id, body.segment),
    )


@router.get("/assignments", response_model=AssignmentPage, responses=READ_PROBLEMS)
def get_assignments(
    rt: RT, verifier: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")]
) -> AssignmentPage:
    with rt.db.read() as session:
        rows = repository.get_verifier_assignments(session, verifier)
        return AssignmentPage(assignments=[service.get_assignment_view(a) for a in rows])


@router.post(
    "/assignments/{assignment_id}/commit", response_model=AssignmentView, responses=WRITE_PROBLEMS
)
def post_commit(
    assignment_id: AssignmentId, body: CommitVerificationRequest, signed: Signed, rt: RT
) -> Response:
    """Commit H(tag ‖ root ‖ salt) to the replayed end root before the solver reveals its own."""
    return execute_signed(
        rt,
        signed,
        lambda s: service.process_verification_commit(
            s, rt, signed.public_key, assignment_id, body.commit_hash
        ),
    )


@router.post(
    "/assignments/{assignment_id}/reveal", response_model=AssignmentView, responses=WRITE_PROBLEMS
)
def post_reveal(
    assignment_id: AssignmentId, body: RevealVerificationRequest, signed: Signed, rt: RT
) -> Response:
    return execute_signed(
        rt,
        signed,
        lambda s: process_verification_reveal(
            s, rt, signed.public_key, assignment_id, body.root, body.salt
        ),
    )
