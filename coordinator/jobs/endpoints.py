from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response

from coordinator.auth import (
    Signed,
    check_signed_headers,
    execute_signed,
    get_runtime,
)
from coordinator.blobstore.ranges import blob_response
from coordinator.jobs import checkpoints, repository, service
from coordinator.jobs.schemas import (
    BidRequest,
    CheckpointView,
    CommitmentRequest,
    JobEventView,
    JobPage,
    JobView,
    SubmitJobRequest,
)
from coordinator.models import BLOB_CHECKPOINT
from coordinator.problems import DOWNLOAD_PROBLEMS, READ_PROBLEMS, WRITE_PROBLEMS
from coordinator.runtime import Runtime
from coordinator.schemas import MAX_ROW_ID, NO_NUL, EmptyRequest
from coordinator.transitions import (
    process_checkpoint_upload,
    process_commitment,
    process_invalid_spec_claim,
)
from coordinator.uploads.service import Target, commit_checkpoint, commit_single_put
from coordinator.verification import repository as verification_repository
from coordinator.verification.schemas import AssignmentPage
from coordinator.verification.service import get_assignment_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
RT = Annotated[Runtime, Depends(get_runtime)]
JobIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
IndexPath = Annotated[int, Path(ge=0, le=10_000_000)]
RangeHeader = Annotated[str | None, Header(alias="Range", max_length=200)]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.post("", response_model=JobEventView, status_code=201, responses=WRITE_PROBLEMS)
def post_job(body: SubmitJobRequest, signed: Signed, rt: RT) -> Response:
    """Post a job: the spec is validated, its id is the hash of its canonical form, the bounty
    is moved to the job's escrow."""
    return execute_signed(
        rt, signed, lambda s: service.process_submit(s, rt, signed.public_key, body), 201
    )


@router.get("", response_model=JobPage, responses=READ_PROBLEMS)
def get_jobs(
    rt: RT,
    state: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    profile: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobPage:
    """Jobs in submission order (pass the last `id` seen as `after` for the next page), optionally
    only those in `state` and/or needing execution profile `profile`."""
    with rt.db.read() as session:
        rows = repository.get_jobs_page(session, state, after, limit, profile)
        return JobPage(jobs=[service.get_job_view(j) for j in rows])


@router.get("/{job_id}", response_model=JobView, responses=READ_PROBLEMS)
def get_job(job_id: JobIdPath, rt: RT) -> JobView:
    with rt.db.read() as session:
        job = repository.get_job(session, job_id)
        return service.get_job_view(job, repository.get_bids(session, job_id), with_spec=True)


@router.post("/{job_id}/bids", response_model=JobEventView, responses=WRITE_PROBLEMS)
def post_bid(job_id: JobIdPath, body: BidRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: service.process_bid(s, rt, signed.public_key, job_id, body)
    )


@router.post("/{job_id}/award", response_model=JobEventView, responses=WRITE_PROBLEMS)
def post_award(job_id: JobIdPath, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """Close bidding (anyone may call once the deadline has passed; the sweeper also does)."""
    return execute_signed(rt, signed, lambda s: service.process_award(s, rt, job_id))


@router.post("/{job_id}/heartbeat", response_model=JobEventView, responses=WRITE_PROBLEMS)
def post_heartbeat(job_id: JobIdPath, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: service.process_heartbeat(s, rt, signed.public_key, job_id)
    )


@router.post("/{job_id}/invalid-spec", response_model=JobEventView, responses=WRITE_PROBLEMS)
def post_invalid_spec(job_id: JobIdPath, _body: EmptyRequest, signed: Signed, rt: RT) -> Response:
    """The solver cannot run the job it won. The coordinator reruns the submission validator:
    if it fails too, the job ends as the submitter's fault and the solver's stake comes back;
    if the spec runs here, 409."""
    return execute_signed(
        rt, signed, lambda s: process_invalid_spec_claim(s, rt, signed.public_key, job_id)
    )


@router.post("/{job_id}/commitment", response_model=JobEventView, responses=WRITE_PROBLEMS)
def post_commitment(job_id: JobIdPath, body: CommitmentRequest, signed: Signed, rt: RT) -> Response:
    return execute_signed(
        rt, signed, lambda s: process_commitment(s, rt, signed.public_key, job_id, body)
    )


@router.get("/{job_id}/assignments", response_model=AssignmentPage, responses=READ_PROBLEMS)
def get_job_assignments(job_id: JobIdPath, rt: RT) -> AssignmentPage:
    with rt.db.read() as session:
        repository.get_job(session, job_id)
        rows = verification_repository.get_job_assignments(session, job_id)
        return AssignmentPage(assignments=[get_assignment_view(a) for a in rows])


@router.put(
    "/{job_id}/checkpoints/{index}",
    response_model=CheckpointView,
    responses=WRITE_PROBLEMS,
    openapi_extra={"requestBody": {"required": True, "content": BINARY}},
)
async def put_checkpoint(
    job_id: JobIdPath,
    index: IndexPath,
    request: Request,
    rt: RT,
    step: Annotated[int, Query(ge=0, le=10_000_000)],
    proof: Annotated[str, Query(max_length=64 * 65)] = "",
) -> Response:
    """Upload checkpoint `index` (safetensors bytes) with its proof of inclusion in the committed
    trajectory, in one request; stored under its SHA-256. The body streams to disk and its state
    root is computed on the staged file in one pass. Large states: the resumable /v1/uploads."""
    check_signed_headers(request)
    parsed_proof = checkpoints.parse_proof(proof)
    target = Target(job_id, index, step, tuple(p.hex() for p in parsed_proof))
    return await commit_single_put(
        request, rt, commit_checkpoint, target, process_checkpoint_upload
    )


@router.get(
    "/{job_id}/checkpoints/{index}",
    responses={**DOWNLOAD_PROBLEMS, 200: {"content": BINARY}, 206: {"content": BINARY}},
)
def get_checkpoint(
    job_id: JobIdPath, index: IndexPath, rt: RT, range_header: RangeHeader = None
) -> Response:
    """The checkpoint's bytes (or one byte range: Range: bytes=FIRST-LAST), checked against
    their SHA-256 before a byte is sent."""
    with rt.db.read() as session:
        row = checkpoints.get_checkpoint_row(session, job_id, index)
    return blob_response(rt.blobs, BLOB_CHECKPOINT, row.blob_sha256, range_header)


@router.get(
    "/{job_id}/checkpoints/{index}/info", response_model=CheckpointView, responses=READ_PROBLEMS
)
def get_checkpoint_info(job_id: JobIdPath, index: IndexPath, rt: RT) -> CheckpointView:
    with rt.db.read() as session:
        row = checkpoints.get_checkpoint_row(session, job_id, index)
        blob = repository.get_blob(session, row.blob_sha256)
        return checkpoints.get_checkpoint_view(row, blob.size)
