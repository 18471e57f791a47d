"""Dataset files: uploaded once under their SHA-256, checked to be a usable training set, served
to solvers, verifiers and the referee. A job naming a file dataset can be posted only after its
file is here, so nobody is ever awarded work they cannot fetch."""

import hashlib

from sqlalchemy.orm import Session

from coordinator.errors import InsufficientFunds, InvalidState, NotFound, QuotaExceeded
from coordinator.jobs import repository
from coordinator.ledger.accounts import available
from coordinator.ledger.service import get_balance, process_movement
from coordinator.models import BLOB_DATASET
from coordinator.runtime import Runtime
from protocol.data import compute_file_dataset
from protocol.errors import InvalidInput
from protocol.spec import JobSpec


def check_dataset_file(sha256: str, data: bytes) -> None:
    """Outside the transaction: the bytes hash to the address and parse as a dataset."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidInput("the body's SHA-256 does not match the address", "sha256")
    compute_file_dataset(data)  # safetensors only: never unpickles


def process_upload(session: Session, rt: Runtime, uploader: str, sha256: str, data: bytes) -> dict:
    if repository.get_blob(session, sha256, BLOB_DATASET) is None:
        _check_can_store(session, rt, uploader)
        repository.add_blob_if_missing(session, sha256, data, BLOB_DATASET, uploader=uploader)
        process_movement(
            session,
            rt,
            "dataset.uploaded",
            {"sha256": sha256, "size": len(data), "uploader": uploader},
            [],
        )
        _check_quota(session, rt, uploader)  # after the log lock: concurrent uploads serialise
    return {"sha256": sha256, "size": len(data)}


def _check_can_store(session: Session, rt: Runtime, uploader: str) -> None:
    """Only an account that could post a job stores data: a fresh key holds nothing, so
    storage costs a funded key per quota, not a free one."""
    balance = get_balance(session, available(uploader))
    if balance < rt.settings.min_bounty:
        raise InsufficientFunds(str(available(uploader)), balance, rt.settings.min_bounty)


def _check_quota(session: Session, rt: Runtime, uploader: str) -> None:
    stored = repository.get_stored_bytes(session, uploader, BLOB_DATASET)
    quota = rt.settings.max_dataset_bytes_per_key
    if stored > quota:
        raise QuotaExceeded(
            f"this key would store {stored} dataset bytes; the quota is {quota} per key"
        )


def get_dataset_bytes(session: Session, sha256: str) -> bytes:
    blob = repository.get_blob(session, sha256, BLOB_DATASET)
    if blob is None:
        raise NotFound(f"no dataset {sha256}")
    return blob.data


def check_dataset_available(session: Session, spec: JobSpec) -> None:
    if (
        spec.dataset.kind == "safetensors"
        and repository.get_blob(session, spec.dataset.sha256, BLOB_DATASET) is None
    ):
        raise InvalidState(f"upload the dataset first: PUT /v1/datasets/{spec.dataset.sha256}")


def get_job_dataset(session: Session, spec: JobSpec) -> bytes | None:
    """The file a job's training program needs, or None for built-in datasets."""
    return (
        get_dataset_bytes(session, spec.dataset.sha256)
        if spec.dataset.kind == "safetensors"
        else None
    )
