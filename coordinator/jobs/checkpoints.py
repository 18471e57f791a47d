"""Content-addressed checkpoint upload and download, checked against the committed trajectory.

The expensive part (hashing every chunk) runs before the write transaction, on the staged file
as it is read once (protocol.state_stream: no tensor is decoded, nothing is held in memory);
inside the transaction only the Merkle proof against the job's committed trajectory root and
the bookkeeping remain. The bytes live in the blob store, put there before the transaction.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from coordinator.blobstore.base import iter_file
from coordinator.datasets.service import get_job_files, get_job_files_size, run_job_worker
from coordinator.errors import Forbidden, InvalidState, NotFound
from coordinator.jobs import repository
from coordinator.jobs.schemas import CheckpointView
from coordinator.models import BLOB_CHECKPOINT, Checkpoint, Job
from coordinator.runtime import Runtime
from protocol.errors import CheckpointCorrupt, InvalidInput
from protocol.spec import compute_checkpoint_steps, parse_job_spec
from protocol.state import (
    StateLayout,
    compute_layout_bytes,
    compute_state_root,
)
from protocol.state_stream import StateStreamHasher, StreamedFile
from protocol.training import build_program, check_runnable_spec
from protocol.trajectory import Commitment, is_valid_trajectory_proof
from protocol.types import Root, StepIndex
from protocol.wire import JobState
from sdk.transfers import compute_file_sha256


@dataclass(frozen=True)
class DecodedCheckpoint:
    """What an upload check found in a staged state file (its bytes stay in the file)."""

    sha256: str
    size: int
    step: int
    state_root: bytes


def compute_spec_layout(rt: Runtime, session: Session, spec_json: dict) -> StateLayout:
    """The submission validator (`check_runnable_spec`, InvalidSpec naming the field) and the
    layout of every state of the job, from shapes alone. A dataset over `max_in_process_bytes`
    is parsed in a worker process: a replica never holds a large dataset either."""
    spec = parse_job_spec(spec_json)
    if get_job_files_size(session, spec) <= rt.settings.max_in_process_bytes:
        return check_runnable_spec(spec, get_job_files(rt, session, spec)).state_layout()
    result = run_job_worker(rt, spec_json, "layout")
    return {name: (tag, tuple(shape)) for name, (tag, shape) in result["layout"].items()}


def get_state_layout(rt: Runtime, session: Session, job: Job) -> StateLayout:
    """`compute_spec_layout` of a posted job: once per job (its id is its spec's hash), kept in
    a small LRU."""
    return rt.state_layouts.get_or_compute(
        ("layout", job.job_id), lambda: compute_spec_layout(rt, session, json.loads(job.spec_json))
    )


def get_initial_root(rt: Runtime, session: Session, job: Job) -> bytes:
    """The root of checkpoint 0 of every honest trajectory of `job`. A state or a dataset over
    `max_in_process_bytes` is handled in a worker process, so a replica never holds a job's
    state whatever its size."""

    def compute() -> bytes:
        spec_json = json.loads(job.spec_json)
        spec = parse_job_spec(spec_json)
        size = compute_layout_bytes(get_state_layout(rt, session, job))
        if max(size, get_job_files_size(session, spec)) <= rt.settings.max_in_process_bytes:
            program = build_program(spec, get_job_files(rt, session, spec))
            return bytes(compute_state_root(program.initial_state()))
        return bytes.fromhex(run_job_worker(rt, spec_json, "initial_root")["root"])

    return rt.state_layouts.get_or_compute(("initial_root", job.job_id), compute)


def is_planted_initial_state(
    job: Job, commitment: Commitment, root: bytes, proof: list[bytes], expected: bytes
) -> bool:
    """Whether the committed trajectory provably starts from another state than the spec's
    initial one: `root` at leaf 0 is proven by `proof` and differs from `expected`. A proof that
    does not open leaf 0 proves nothing and is refused."""
    if not is_valid_trajectory_proof(
        StepIndex(0), Root(root), 0, job.num_checkpoints, proof, commitment.trajectory_root
    ):
        raise InvalidInput(
            "initial_state_root and initial_proof do not open leaf 0 of the trajectory",
            "initial_proof",
        )
    return root != expected


def stream_state_file(path: Path) -> StreamedFile:
    """Read the file once; its SHA-256 and its state root side by side on two threads (hashlib
    frees the GIL). CheckpointCorrupt on the first byte that cannot belong to a state."""
    size = path.stat().st_size
    with ThreadPoolExecutor(1) as pool:
        sha256 = pool.submit(compute_file_sha256, path)
        hasher = StateStreamHasher(size)
        for chunk in iter_file(path):
            hasher.update(chunk)
        return StreamedFile(sha256.result(), size, hasher.finish())


def compute_staged_checkpoint(
    path: Path, step: int, layout: StateLayout, streamed: StreamedFile | None = None
) -> DecodedCheckpoint:
    """A peer's state in a staged file, never decoded into tensors (`streamed`: its hashes
    already taken while it arrived, else read now): exactly `layout`'s tensors, dtypes and
    shapes (CheckpointCorrupt naming the tensor otherwise), at `step`, so the referee can always
    step it."""
    streamed = streamed or stream_state_file(path)
    check_streamed_layout(streamed.state.layout, layout)
    if streamed.state.step != step:
        raise CheckpointCorrupt(f"state is at step {streamed.state.step}, not {step}")
    return DecodedCheckpoint(streamed.sha256, streamed.size, step, streamed.state.root)


def check_streamed_layout(actual: StateLayout, expected: StateLayout) -> None:
    """Exactly the job's tensors, dtypes and shapes, naming the first that differs."""
    for name in sorted(set(actual) | set(expected)):
        if name not in expected:
            raise CheckpointCorrupt(f"tensor {name!r} is not part of this job's state", tensor=name)
        if name not in actual:
            raise CheckpointCorrupt(f"tensor {name!r} of this job's state is missing", tensor=name)
        (dtype, shape), (want_dtype, want_shape) = actual[name], expected[name]
        if dtype != want_dtype or tuple(shape) != tuple(want_shape):
            raise CheckpointCorrupt(
                f"tensor {name!r} is {dtype} {list(shape)}, this job's state has "
                f"{want_dtype} {list(want_shape)}",
                tensor=name,
            )


def parse_proof(text: str) -> list[bytes]:
    try:
        proof = [bytes.fromhex(h) for h in text.split(",") if h]
    except ValueError as err:
        raise InvalidInput("proof must be comma-separated hex hashes", "proof") from err
    if len(proof) > 64 or any(len(p) != 32 for p in proof):
        raise InvalidInput("proof must be at most 64 hashes of 32 bytes", "proof")
    return proof


def _check_against_commitment(
    session: Session, job_id: str, index: int, ckpt: DecodedCheckpoint, proof: list[bytes]
):
    job = repository.lock_job(session, job_id)
    if job.state != JobState.VERIFYING:
        raise InvalidState(f"job is {job.state}: checkpoints are uploaded while verifying")
    steps = compute_checkpoint_steps(parse_job_spec(json.loads(job.spec_json)))
    if not 0 <= index < len(steps) or steps[index] != ckpt.step:
        raise InvalidInput(f"checkpoint {index} is not at step {ckpt.step}", "step")
    if not is_valid_trajectory_proof(
        StepIndex(ckpt.step),
        Root(ckpt.state_root),
        index,
        job.num_checkpoints,
        proof,
        Root(bytes.fromhex(job.trajectory_root)),
    ):
        raise CheckpointCorrupt("state root and proof do not match the committed trajectory root")
    return job


def lock_upload_target(
    session: Session, who: str, job_id: str, index: int, ckpt: DecodedCheckpoint, proof: list[bytes]
) -> tuple[Job, Checkpoint | None]:
    """Lock the job, check the upload against its commitment; the row already stored, if any
    (its content is bound by the proof, so a retry changes nothing)."""
    job = _check_against_commitment(session, job_id, index, ckpt, proof)
    if who != job.solver:
        raise Forbidden("only the job's solver uploads its checkpoints")
    return job, repository.get_checkpoint(session, job_id, index)


def process_store_checkpoint(
    session: Session, job_id: str, index: int, ckpt: DecodedCheckpoint, now: float = 0.0
) -> Checkpoint:
    """The bytes are in the blob store already (put before this transaction)."""
    repository.add_blob_if_missing(session, ckpt.sha256, ckpt.size, BLOB_CHECKPOINT, None, now)
    row = Checkpoint(
        job_id=job_id,
        index=index,
        step=ckpt.step,
        state_root=ckpt.state_root.hex(),
        blob_sha256=ckpt.sha256,
    )
    session.add(row)
    return row


def get_checkpoint_row(session: Session, job_id: str, index: int) -> Checkpoint:
    row = repository.get_checkpoint(session, job_id, index)
    if row is None:
        raise NotFound(f"checkpoint {index} of job {job_id} has not been uploaded")
    return row


def get_checkpoint_view(row: Checkpoint, size: int) -> CheckpointView:
    return CheckpointView(
        job_id=row.job_id,
        index=row.index,
        step=row.step,
        state_root=row.state_root,
        sha256=row.blob_sha256,
        size=size,
    )
