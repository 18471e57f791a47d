"""A job's files: the bytes a spec names by SHA-256 (`protocol.spec.get_job_file_hashes`): a
safetensors dataset, an ONNX training graph, a safetensors file of initial weights. Whoever builds
the training program hands them in keyed by hash; `protocol/` never reads a file itself."""

import hashlib
from collections.abc import Iterable, Mapping

from protocol.errors import InvalidSpec

JobFiles = Mapping[str, bytes]  # SHA-256 hex → the file's bytes
SAFETENSORS_HEADER_LIMIT = 100_000_000  # safetensors' own bound on its JSON header


def collect_job_files(blobs: Iterable[bytes]) -> dict[str, bytes]:
    """Files keyed by their own SHA-256, so a file can only ever stand for itself."""
    return {hashlib.sha256(blob).hexdigest(): blob for blob in blobs}


def get_job_file(files: JobFiles | None, sha256: str, field_name: str) -> bytes:
    blob = (files or {}).get(sha256)
    if blob is None or hashlib.sha256(blob).hexdigest() != sha256:
        raise InvalidSpec(f"needs the file with SHA-256 {sha256}, which was not given", field_name)
    return blob


def looks_like_safetensors(blob: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object: never a valid ONNX protobuf
    start in practice, and cheap to tell apart before a full parse."""
    if len(blob) < 10:
        return False
    size = int.from_bytes(blob[:8], "little")
    return 0 < size <= min(SAFETENSORS_HEADER_LIMIT, len(blob) - 8) and blob[8:9] == b"{"


def check_job_file(blob: bytes) -> str:
    """What an uploaded file is — "dataset", "weights" or "onnx" — or InvalidSpec saying why it
    is none of them. A job naming it is checked again against its spec at submission."""
    if looks_like_safetensors(blob):
        from protocol.data import compute_file_dataset
        from protocol.weights import check_weights_file

        try:
            compute_file_dataset(blob)
            return "dataset"
        except InvalidSpec as dataset_error:
            if check_weights_file(blob):
                return "weights"
            raise dataset_error
    import onnx  # only for files that are not safetensors

    from protocol.onnx_model import load_onnx_model

    try:
        onnx.load_model_from_string(blob)
    except Exception as err:  # noqa: BLE001 — protobuf reports bad bytes as several types
        raise InvalidSpec(
            "neither a safetensors file (dataset, weights) nor an ONNX graph", "file"
        ) from err
    load_onnx_model(blob)
    return "onnx"
