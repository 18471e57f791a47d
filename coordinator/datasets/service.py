"""Job files — datasets, ONNX training graphs, initial weights: uploaded once under their SHA-256,
checked to parse as one of those, served to solvers, verifiers and the referee. A job naming a
file can be posted only after the file is here, so nobody is ever awarded work they cannot fetch. The bytes live in the blob store;
the ledger's `blobs` row holds the address, size and uploader (what the quota counts)."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import InsufficientFunds, InvalidState, NotFound, QuotaExceeded
from coordinator.jobs import repository
from coordinator.ledger.accounts import available
from coordinator.ledger.service import get_balance, process_movement
from coordinator.models import BLOB_DATASET, Blob
from coordinator.runtime import Runtime
from protocol.job_files import check_job_file
from protocol.spec import ExecutionProfile, JobSpec, get_job_file_hashes, parse_job_spec


def check_dataset_file(rt: Runtime, path: Path) -> None:
    """Outside the transaction, on the staged file (whose hash the caller checked): it parses
    as a job file: a dataset or weights (safetensors: never unpickles) or an ONNX graph (parsed,
    never executed). A file over `max_in_process_bytes` is parsed in a worker process."""
    if path.stat().st_size <= rt.settings.max_in_process_bytes:
        check_job_file(path.read_bytes())
        return
    request = {"command": "check_file", "file_path": str(path)}
    rt.referee_workers.run(request, ExecutionProfile(), rt.settings.referee_timeout_s)


def process_upload(session: Session, rt: Runtime, uploader: str, sha256: str, size: int) -> dict:
    """The bytes are in the blob store already (put before this transaction)."""
    if repository.get_blob(session, sha256, BLOB_DATASET) is None:
        check_can_store(session, rt, uploader)
        repository.add_blob_if_missing(
            session, sha256, size, BLOB_DATASET, uploader=uploader, created_at=rt.clock.now()
        )
        process_movement(
            session,
            rt,
            "dataset.uploaded",
            {"sha256": sha256, "size": size, "uploader": uploader},
            [],
        )
        check_quota(session, rt, uploader)  # after the log lock: concurrent uploads serialise
    return {"sha256": sha256, "size": size}


def check_can_store(session: Session, rt: Runtime, uploader: str) -> None:
    """Only an account that could post a job stores data: a fresh key holds nothing, so
    storage costs a funded key per quota, not a free one."""
    balance = get_balance(session, available(uploader))
    if balance < rt.settings.min_bounty:
        raise InsufficientFunds(str(available(uploader)), balance, rt.settings.min_bounty)


def check_quota(session: Session, rt: Runtime, uploader: str, pending: int = 0) -> None:
    """Stored dataset bytes (plus `pending` bytes an upload is about to add) within the quota."""
    stored = repository.get_stored_bytes(session, uploader, BLOB_DATASET) + pending
    quota = rt.settings.max_dataset_bytes_per_key
    if stored > quota:
        raise QuotaExceeded(
            f"this key would store {stored} dataset bytes; the quota is {quota} per key"
        )


def get_dataset_row(session: Session, sha256: str) -> Blob:
    blob = repository.get_blob(session, sha256, BLOB_DATASET)
    if blob is None:
        raise NotFound(f"no dataset {sha256}")
    return blob


def get_dataset_bytes(rt: Runtime, session: Session, sha256: str) -> bytes:
    get_dataset_row(session, sha256)
    return rt.blobs.read_bytes(BLOB_DATASET, sha256)


def check_job_files_available(session: Session, spec: JobSpec) -> None:
    """Every file the job names is stored. Locks their rows (FOR UPDATE) for the rest of the
    submission's transaction, so GC cannot delete one between this check and the job's insert
    (coordinator.blobstore.gc)."""
    for sha256 in get_job_file_hashes(spec):
        stmt = (
            select(Blob.sha256)
            .where(Blob.kind == BLOB_DATASET, Blob.sha256 == sha256)
            .with_for_update()
        )
        if session.execute(stmt).first() is None:
            raise InvalidState(f"upload the job's file first: PUT /v1/datasets/{sha256}")


def get_job_files(rt: Runtime, session: Session, spec: JobSpec) -> dict[str, bytes]:
    """The files a job's training program needs, by SHA-256 (none for built-in data/models)."""
    return {sha: get_dataset_bytes(rt, session, sha) for sha in get_job_file_hashes(spec)}


def get_job_files_size(session: Session, spec: JobSpec) -> int:
    """Bytes of the job's files; 0 for a built-in dataset and model."""
    return sum(get_dataset_row(session, sha).size for sha in get_job_file_hashes(spec))


@contextmanager
def open_job_files(rt: Runtime, spec: JobSpec) -> Iterator[list[str]]:
    """Verified local files of the job's files for a worker process to read: the replica
    itself never reads them into memory."""
    scratch = rt.settings.get_upload_dir()
    with ExitStack() as stack:
        yield [
            str(stack.enter_context(rt.blobs.local_file(BLOB_DATASET, sha, scratch)))
            for sha in get_job_file_hashes(spec)
        ]


def run_job_worker(rt: Runtime, spec_json: dict, command: str, **fields: Any) -> dict:
    """One `sdk.tasks` command on a job's training program, in a warm worker pinned to the
    job's profile, its files read from disk there: what a replica does with a job too large
    to build itself. The worker's typed errors (InvalidSpec, CheckpointCorrupt) pass through."""
    spec = parse_job_spec(spec_json)
    with open_job_files(rt, spec) as file_paths:
        request = {"command": command, "spec": spec_json, "file_paths": file_paths, **fields}
        return rt.referee_workers.run(request, spec.profile, rt.settings.referee_timeout_s)
