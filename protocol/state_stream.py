"""A training state's root, step and layout from its safetensors bytes as they arrive, in pieces of
any size: what lets a multi-gigabyte checkpoint be checked while it streams to disk, without ever
being decoded into tensors.

Sans-I/O: bytes in (`update`), a `StreamedState` out (`finish`). The leaves are exactly
`protocol.state.compute_chunk_hashes`' (safetensors stores each tensor's little-endian bytes in
row-major order, which is the canonical encoding), so the root equals
`compute_state_root(decode_state(data))` for every file `decode_state` accepts. The header is
checked more strictly than the safetensors library does: no duplicate names, and the tensors must
tile the data buffer exactly up to the size the caller declared.
"""

import hashlib
import json
import math
import struct
from dataclasses import dataclass

from protocol.errors import CheckpointCorrupt
from protocol.merkle import LEAF_PREFIX, root_from_leaf_hashes
from protocol.state import (
    CHUNK_SIZE,
    MAX_NAME_BYTES,
    MAX_RANK,
    STATE_PREFIXES,
    STEP_KEY,
    TAG_BYTES,
    StateLayout,
    compute_chunk_header,
)

MAX_HEADER_BYTES = 16 * 2**20  # a header this large already names ~100,000 tensors
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class StreamedState:
    step: int
    layout: StateLayout
    root: bytes


@dataclass(frozen=True)
class StreamedFile:
    """A whole state file's SHA-256 and size, with its streamed state."""

    sha256: str
    size: int
    state: StreamedState


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int
    first_leaf: int

    @property
    def chunks(self) -> int:
        return max(1, math.ceil((self.end - self.begin) / CHUNK_SIZE))


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise CheckpointCorrupt("the safetensors header names a tensor twice")
    return dict(pairs)


def _check_entry(name: str, entry: object) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(entry, dict) or entry.get("dtype") not in TAG_BYTES:
        raise CheckpointCorrupt(f"tensor {name[:64]!r} has no supported dtype", tensor=name[:64])
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise CheckpointCorrupt(f"tensor {name!r} has an invalid shape", tensor=name)
    if not (isinstance(offsets, list) and len(offsets) == 2):
        raise CheckpointCorrupt(f"tensor {name!r} has invalid data_offsets", tensor=name)
    begin, end = offsets
    if not (type(begin) is int and type(end) is int and 0 <= begin <= end):
        raise CheckpointCorrupt(f"tensor {name!r} has invalid data_offsets", tensor=name)
    if end - begin != math.prod(shape) * TAG_BYTES[entry["dtype"]]:
        raise CheckpointCorrupt(f"tensor {name!r}: offsets do not match its shape", tensor=name)
    if len(name.encode()) > MAX_NAME_BYTES or len(shape) > MAX_RANK:
        raise CheckpointCorrupt(f"tensor {name[:64]!r} does not fit a chunk header")
    if name != STEP_KEY and not name.startswith(STATE_PREFIXES):
        raise CheckpointCorrupt(f"unexpected tensor {name!r} in state", tensor=name)
    return entry["dtype"], tuple(shape), begin, end


def parse_state_header(header: bytes, data_start: int, total_size: int) -> list[StoredTensor]:
    """The tensors in file order (absolute byte offsets), with their first leaf index in tree
    (sorted-name) order; CheckpointCorrupt unless they tile the data up to `total_size`."""
    try:
        parsed = json.loads(header, object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorrupt(f"unreadable safetensors header ({err})") from err
    if not isinstance(parsed, dict):
        raise CheckpointCorrupt("the safetensors header is not an object")
    entries = {n: _check_entry(n, e) for n, e in parsed.items() if n != METADATA_KEY}
    if entries.get(STEP_KEY, ("", (0,)))[:2] != ("I64", ()):
        raise CheckpointCorrupt("state has no int64 scalar 'step' tensor")
    first_leaf, leaf = {}, 0
    for name in sorted(entries):
        first_leaf[name] = leaf
        leaf += max(1, math.ceil((entries[name][3] - entries[name][2]) / CHUNK_SIZE))
    tensors = sorted(
        (
            StoredTensor(n, d, s, data_start + b, data_start + e, first_leaf[n])
            for n, (d, s, b, e) in entries.items()
        ),
        key=lambda t: (t.begin, t.end),
    )
    _check_tiling(tensors, data_start, total_size)
    return tensors


def _check_tiling(tensors: list[StoredTensor], data_start: int, total_size: int) -> None:
    position = data_start
    for tensor in tensors:
        if tensor.begin != position:
            raise CheckpointCorrupt("tensor data overlaps or leaves gaps", tensor=tensor.name)
        position = tensor.end
    if position != total_size:
        raise CheckpointCorrupt(
            f"the header describes {position} bytes, the upload is {total_size}"
        )


def parse_header_length(prefix: bytes, total_size: int) -> int:
    """The header length a safetensors file's first 8 bytes declare, if a state may have it."""
    (length,) = struct.unpack("<Q", prefix)
    if not 2 <= length <= MAX_HEADER_BYTES or 8 + length > total_size:
        raise CheckpointCorrupt(f"safetensors header of {length} bytes is not acceptable")
    return length


class StateStreamHasher:
    """Feed the bytes of a safetensors state of `total_size` bytes in order; `finish` checks they
    all came and returns the state's step, layout and root. Raises CheckpointCorrupt on the first
    byte that cannot belong to a valid state."""

    def __init__(self, total_size: int):
        self.total_size = total_size
        self.position = 0
        self.prefix = bytearray()  # the 8-byte length and the header, until parsed
        self.tensors: list[StoredTensor] | None = None
        self.leaves: list[bytes | None] = []
        self.current = 0  # index into self.tensors
        self.chunk_hash = None
        self.step_bytes = bytearray()

    def copy(self) -> "StateStreamHasher":
        """An independent hasher at the same point (to try bytes that may yet be refused)."""
        twin = StateStreamHasher(self.total_size)
        twin.position, twin.current = self.position, self.current
        twin.prefix, twin.step_bytes = bytearray(self.prefix), bytearray(self.step_bytes)
        twin.tensors, twin.leaves = self.tensors, list(self.leaves)  # tensors are never changed
        twin.chunk_hash = self.chunk_hash.copy() if self.chunk_hash is not None else None
        return twin

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self.tensors is None:
            view = self._take_header(view)
        while view:
            view = self._take_data(view)

    def _take_header(self, view: memoryview) -> memoryview:
        while view and self.tensors is None:
            need = 8 if len(self.prefix) < 8 else 8 + self._header_length()
            taken = min(len(view), need - len(self.prefix))
            self.prefix += view[:taken]
            self.position += taken
            view = view[taken:]
            if len(self.prefix) == need > 8:
                self._start_data(bytes(self.prefix[8:]))
        return view

    def _header_length(self) -> int:
        return parse_header_length(bytes(self.prefix[:8]), self.total_size)

    def _start_data(self, header: bytes) -> None:
        self.tensors = parse_state_header(header, self.position, self.total_size)
        self.leaves = [None] * sum(t.chunks for t in self.tensors)
        self._skip_empty_tensors()

    def _skip_empty_tensors(self) -> None:
        """A tensor of no bytes is one leaf of header alone, and takes nothing from the stream."""
        while self.current < len(self.tensors) and self.tensors[self.current].begin == (
            self.tensors[self.current].end
        ):
            tensor = self.tensors[self.current]
            leaf = compute_chunk_header(tensor.name, tensor.dtype, tensor.shape, 0, 1)
            self.leaves[tensor.first_leaf] = hashlib.sha256(LEAF_PREFIX + leaf).digest()
            self.current += 1

    def _take_data(self, view: memoryview) -> memoryview:
        if self.current >= len(self.tensors):
            raise CheckpointCorrupt(f"more than the {self.total_size} bytes declared")
        tensor = self.tensors[self.current]
        offset = self.position - tensor.begin
        chunk, within = divmod(offset, CHUNK_SIZE)
        if within == 0:
            header = compute_chunk_header(
                tensor.name, tensor.dtype, tensor.shape, chunk, tensor.chunks
            )
            self.chunk_hash = hashlib.sha256(LEAF_PREFIX + header)
        taken = min(len(view), CHUNK_SIZE - within, tensor.end - self.position)
        self.chunk_hash.update(view[:taken])
        if tensor.name == STEP_KEY:
            self.step_bytes += view[:taken]
        self.position += taken
        if within + taken == CHUNK_SIZE or self.position == tensor.end:
            self.leaves[tensor.first_leaf + chunk] = self.chunk_hash.digest()
        if self.position == tensor.end:
            self.current += 1
            self._skip_empty_tensors()
        return view[taken:]

    def finish(self) -> StreamedState:
        if self.tensors is None or self.position != self.total_size:
            raise CheckpointCorrupt(
                f"the state ended after {self.position} of {self.total_size} bytes"
            )
        layout = {t.name: (t.dtype, t.shape) for t in sorted(self.tensors, key=lambda t: t.name)}
        step = int.from_bytes(self.step_bytes, "little", signed=True)
        return StreamedState(step, layout, bytes(root_from_leaf_hashes(self.leaves)))


def compute_streamed_state(data: bytes) -> StreamedState:
    """The whole of `data` at once (tests, small states)."""
    hasher = StateStreamHasher(len(data))
    hasher.update(data)
    return hasher.finish()
