"""Training states on disk, one tensor at a time: a multi-gigabyte state is written and read
without a second copy of it in memory (the safetensors library's own `save` and `load` each hold
the whole file as bytes beside the tensors).

The bytes are exactly the canonical encoding (`protocol.state.iter_encoded_state`); reading
refuses any other header, so a file read here re-encodes to itself.
"""

import hashlib
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from protocol.errors import CheckpointCorrupt
from protocol.state import (
    TAG_DTYPES,
    TrainingState,
    encode_state_header,
    iter_encoded_state,
    validate_state_layout,
)
from protocol.state_stream import parse_header_length, parse_state_header


def write_atomically(path: Path, data: bytes | Iterable[bytes | memoryview], digest=None) -> None:
    """Write to a temporary name, fsync, rename: a crash never leaves a half-written file. A
    hashlib `digest` is fed every byte on a second thread while the bytes are written."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle, ThreadPoolExecutor(1) as hasher:
        for piece in [data] if isinstance(data, bytes) else data:
            hashed = hasher.submit(digest.update, piece) if digest is not None else None
            handle.write(piece)
            if hashed is not None:
                hashed.result()
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_state_file(path: Path, state: TrainingState) -> None:
    write_atomically(path, iter_encoded_state(state))


def write_hashed_state_file(path: Path, state: TrainingState) -> str:
    """Write the state's file and return its SHA-256 (hex), hashed while it is written: an
    upload of the file later starts without reading it once more."""
    digest = hashlib.sha256()
    write_atomically(path, iter_encoded_state(state), digest)
    return digest.hexdigest()


def read_state_file(path: Path) -> TrainingState:
    """A state from a peer's (or our own) file: safetensors only, never unpickled, each tensor
    read straight into its own memory. CheckpointCorrupt for a truncated or malformed file or a
    header other than the canonical one."""
    total = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = _read_exactly(handle, 8)
        header = _read_exactly(handle, parse_header_length(prefix, total))
        state = {}
        for stored in parse_state_header(header, 8 + len(header), total):
            state[stored.name] = _read_tensor(handle, stored)
    validate_state_layout(state)
    if encode_state_header(state) != prefix + header:
        raise CheckpointCorrupt("safetensors header differs from the canonical encoding")
    return state


def _read_tensor(handle, stored) -> torch.Tensor:
    tensor = torch.empty(stored.shape, dtype=TAG_DTYPES[stored.dtype])
    if stored.end > stored.begin:
        target = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        if handle.readinto(target) != len(target):
            raise CheckpointCorrupt("the state file ended early", tensor=stored.name)
        if sys.byteorder != "little":  # the file is little-endian everywhere
            tensor = torch.from_numpy(tensor.numpy().byteswap())
    return tensor


def _read_exactly(handle, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise CheckpointCorrupt("the state file ended early")
    return data
