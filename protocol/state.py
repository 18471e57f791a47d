"""Canonical encoding of a full training state, its chunks and its Merkle root.

A state is a flat dict of named tensors: `param/<name>`, `opt/<slot>/<name>` and the int64 scalar
`step`. Tensors are taken in sorted name order; each tensor's little-endian bytes are cut into
CHUNK_SIZE pieces and every piece becomes one leaf, prefixed by a header naming the tensor, its
dtype, shape and the piece's index — so a disputed chunk always names the tensor it belongs to.
Leaf hashes are computed over memoryviews of the tensors themselves: no copies, which is what
keeps state roots within reach of raw SHA-256 throughput.
"""

import hashlib
import json
import math
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from protocol.errors import CheckpointCorrupt, InternalError
from protocol.merkle import LEAF_PREFIX, root_from_leaf_hashes
from protocol.types import Root

TrainingState = dict[str, torch.Tensor]

CHUNK_SIZE = 1 << 16  # bytes of tensor data per leaf
STEP_KEY = "step"
PARAM_PREFIX = "param/"
BUFFER_PREFIX = "buffer/"  # updated by the forward pass, not trained (batch-norm statistics)
METRIC_PREFIX = "metric/"  # the final model's evaluation, committed with the last state
STATE_PREFIXES = (PARAM_PREFIX, "opt/", BUFFER_PREFIX, METRIC_PREFIX)
ALLOWED_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
TAG_DTYPES = {tag: dtype for dtype, tag in ALLOWED_DTYPES.items()}
TAG_BYTES = {"F32": 4, "F64": 8, "I64": 8}
FORMAT_TAG = "veritrain-state-v1"
MAX_NAME_BYTES = 0xFFFF  # "<H" in the chunk header
MAX_RANK = 0xFF  # "<B" in the chunk header
# safetensors lays tensors out by dtype, widest-ranked first (its Dtype enum order), then by name
SAFETENSORS_DTYPE_RANK = {"I64": 0, "F64": 1, "F32": 2}


@dataclass(frozen=True)
class ChunkRef:
    """Where leaf `index` of a state tree comes from."""

    index: int
    tensor: str
    chunk_in_tensor: int
    start: int  # byte offset inside the tensor
    end: int


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    if tensor.dtype not in ALLOWED_DTYPES:
        raise InternalError(f"state tensors must be float32, float64 or int64, not {tensor.dtype}")
    flat = tensor.detach().contiguous().reshape(-1)
    if sys.byteorder != "little":  # canonical encoding is little-endian everywhere
        flat = flat.numpy().byteswap()
        return memoryview(flat.view("uint8"))
    return memoryview(flat.view(torch.uint8).numpy())


def _chunk_header(name: str, tensor: torch.Tensor, chunk: int, chunks: int) -> bytes:
    return compute_chunk_header(
        name, ALLOWED_DTYPES[tensor.dtype], tuple(tensor.shape), chunk, chunks
    )


def compute_chunk_header(
    name: str, dtype_tag: str, shape: tuple[int, ...], chunk: int, chunks: int
) -> bytes:
    """The header every leaf of tensor `name` starts with (dtype tag as safetensors spells it:
    "F32", "F64", "I64"), so a state can be hashed from its safetensors bytes as they stream."""
    encoded_name = name.encode()
    return b"".join(
        [
            b"VTCHUNK1",
            struct.pack("<H", len(encoded_name)),
            encoded_name,
            dtype_tag.encode(),
            struct.pack("<B", len(shape)),
            struct.pack(f"<{len(shape)}Q", *shape),
            struct.pack("<II", chunk, chunks),
        ]
    )


def _chunk_bounds(num_bytes: int) -> list[tuple[int, int]]:
    if num_bytes == 0:
        return [(0, 0)]
    return [(s, min(s + CHUNK_SIZE, num_bytes)) for s in range(0, num_bytes, CHUNK_SIZE)]


def compute_layout_bytes(layout: "StateLayout") -> int:
    """Bytes of tensor data in every state with this layout."""
    return sum(math.prod(shape) * TAG_BYTES[tag] for tag, shape in layout.values())


def compute_encoded_size(layout: "StateLayout") -> int:
    """Bytes of the canonical file of every state with this layout (its header is built from
    meta tensors: nothing is allocated)."""
    meta = {
        name: torch.empty(shape, dtype=TAG_DTYPES[tag], device="meta")
        for name, (tag, shape) in layout.items()
    }
    return len(encode_state_header(meta)) + compute_layout_bytes(layout)


def count_layout_chunks(layout: "StateLayout") -> int:
    """Leaves of every state with this layout, without any tensor in hand."""
    return sum(
        len(_chunk_bounds(math.prod(shape) * TAG_BYTES[tag])) for tag, shape in layout.values()
    )


def compute_chunk_layout(state: TrainingState) -> list[ChunkRef]:
    layout: list[ChunkRef] = []
    for name in sorted(state):
        tensor = state[name]
        bounds = _chunk_bounds(tensor.numel() * tensor.element_size())
        for chunk, (start, end) in enumerate(bounds):
            layout.append(ChunkRef(len(layout), name, chunk, start, end))
    return layout


def compute_chunk_hashes(state: TrainingState) -> list[bytes]:
    """Leaf hashes H(0x00 ‖ header ‖ bytes) of every chunk, in tree order."""
    hashes: list[bytes] = []
    for name in sorted(state):
        tensor = state[name]
        data = _tensor_bytes(tensor)
        bounds = _chunk_bounds(len(data))
        for chunk, (start, end) in enumerate(bounds):
            digest = hashlib.sha256(LEAF_PREFIX)
            digest.update(_chunk_header(name, tensor, chunk, len(bounds)))
            digest.update(data[start:end])
            hashes.append(digest.digest())
    return hashes


def compute_state_root(state: TrainingState) -> Root:
    return root_from_leaf_hashes(compute_chunk_hashes(state))


def get_model_params(state: TrainingState) -> TrainingState:
    return {k: v for k, v in state.items() if k.startswith(PARAM_PREFIX)}


def compute_model_root(state: TrainingState) -> Root:
    """Root over the parameters alone: what a submitter downloads as the trained model."""
    return compute_state_root(get_model_params(state))


def get_step(state: TrainingState) -> int:
    return int(state[STEP_KEY].item())


def encode_state_header(state: TrainingState) -> bytes:
    """The canonical safetensors prefix of a state: the 8-byte header length, then the JSON header
    padded with spaces to 8 bytes, exactly as `safetensors.torch.save` writes it (tests hold the
    two equal), so a state can be written tensor by tensor without a second copy in memory."""
    entries: dict[str, dict] = {"__metadata__": {"format": FORMAT_TAG}}
    offset = 0
    for name in _file_order(state):
        size = state[name].numel() * state[name].element_size()
        entries[name] = {
            "dtype": ALLOWED_DTYPES[state[name].dtype],
            "shape": list(state[name].shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def _file_order(state: TrainingState) -> list[str]:
    for name, tensor in state.items():
        if tensor.dtype not in ALLOWED_DTYPES:
            raise InternalError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
    return sorted(state, key=lambda n: (SAFETENSORS_DTYPE_RANK[ALLOWED_DTYPES[state[n].dtype]], n))


def iter_encoded_state(state: TrainingState) -> Iterator[bytes | memoryview]:
    """The canonical safetensors bytes of a state in pieces: its header, then each tensor's bytes
    as a view of the tensor itself (no copy)."""
    yield encode_state_header(state)
    for name in _file_order(state):
        yield _tensor_bytes(state[name])


def encode_state(state: TrainingState) -> bytes:
    """safetensors bytes of the state (deterministic for a given state)."""
    return b"".join(iter_encoded_state(state))


def decode_state(data: bytes) -> TrainingState:
    """Parse safetensors bytes from a peer (never pickle) and check the state's shape."""
    try:
        state = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        raise CheckpointCorrupt(f"unreadable safetensors data ({err})") from err
    validate_state_layout(state)
    return state


def validate_state_layout(state: TrainingState) -> None:
    step = state.get(STEP_KEY)
    if step is None or step.dtype != torch.int64 or step.dim() != 0:
        raise CheckpointCorrupt("state has no int64 scalar 'step' tensor")
    for name, tensor in state.items():
        if tensor.dtype not in ALLOWED_DTYPES:
            raise CheckpointCorrupt(
                f"tensor {name!r} has unsupported dtype {tensor.dtype}", tensor=name
            )
        if name != STEP_KEY and not name.startswith(STATE_PREFIXES):
            raise CheckpointCorrupt(f"unexpected tensor {name!r} in state", tensor=name)
        validate_chunk_header_fits(name, tensor)


def validate_chunk_header_fits(name: str, tensor: torch.Tensor) -> None:
    """The leaf header stores the name's length in 16 bits and the rank in 8 bits."""
    if len(name.encode()) > MAX_NAME_BYTES:
        raise CheckpointCorrupt(f"a tensor name is over {MAX_NAME_BYTES} bytes", tensor=name[:64])
    if tensor.dim() > MAX_RANK:
        raise CheckpointCorrupt(f"tensor {name!r} has over {MAX_RANK} dimensions", tensor=name)


def locate_bad_chunk(state: TrainingState, expected_hashes: list[bytes]) -> ChunkRef | None:
    """First chunk whose hash differs from `expected_hashes`, or None if all match."""
    actual = compute_chunk_hashes(state)
    layout = compute_chunk_layout(state)
    for ref, got, want in zip(layout, actual, expected_hashes, strict=False):
        if got != want:
            return ref
    if len(actual) != len(expected_hashes):
        return layout[min(len(actual), len(expected_hashes)) - 1] if layout else None
    return None


StateLayout = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (dtype tag, shape)


def compute_state_layout(state: TrainingState) -> StateLayout:
    """Every tensor's name, dtype tag ("F32", "F64", "I64") and shape: what a job's training
    program fixes for all of its states (`TrainingProgram.initial_state()` has them all)."""
    return {
        name: (ALLOWED_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for name, t in sorted(state.items())
    }


def validate_state_matches_layout(state: TrainingState, expected: StateLayout) -> None:
    """Exactly the expected tensors, each with the expected dtype and shape; otherwise
    CheckpointCorrupt naming the first offending tensor (sorted order)."""
    for name in sorted(set(state) | set(expected)):
        if name not in expected:
            raise CheckpointCorrupt(f"tensor {name!r} is not part of this job's state", tensor=name)
        if name not in state:
            raise CheckpointCorrupt(f"tensor {name!r} of this job's state is missing", tensor=name)
        dtype, shape = compute_state_layout({name: state[name]})[name]
        want_dtype, want_shape = expected[name]
        if dtype != want_dtype:
            raise CheckpointCorrupt(
                f"tensor {name!r} has dtype {dtype}, this job's state has {want_dtype}", tensor=name
            )
        if shape != tuple(want_shape):
            raise CheckpointCorrupt(
                f"tensor {name!r} has shape {list(shape)}, this job's state has {list(want_shape)}",
                tensor=name,
            )
