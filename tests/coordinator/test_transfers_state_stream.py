"""protocol.state_stream: a state's root, step and layout from its safetensors bytes fed in
pieces of any size equal what decoding the whole state gives; malformed files are refused."""

import json
import random
import struct

import pytest
import torch

from protocol.errors import CheckpointCorrupt
from protocol.state import (
    CHUNK_SIZE,
    compute_state_layout,
    compute_state_root,
    decode_state,
    encode_state,
)
from protocol.state_stream import StateStreamHasher, compute_streamed_state


def _state(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "step": torch.tensor(seed * 7 + 1, dtype=torch.int64),
        "param/w": torch.randn(300, 70, generator=generator),  # several chunks, a ragged last
        "param/empty": torch.zeros(0, dtype=torch.float64),  # a leaf of header alone
        "opt/exp_avg/w": torch.randn(CHUNK_SIZE // 8, generator=generator).double(),  # exact
        "opt/count": torch.arange(6, dtype=torch.int64).reshape(3, 2),
    }


@pytest.mark.parametrize("seed", range(8))
def test_streamed_root_equals_the_decoded_root_for_any_split(seed):
    data = encode_state(_state(seed))
    decoded = decode_state(data)
    hasher, rng, position = StateStreamHasher(len(data)), random.Random(seed), 0
    while position < len(data):
        size = rng.choice([1, 3, 8, 9, 4096, CHUNK_SIZE - 1, CHUNK_SIZE + 5, 1 << 20])
        hasher.update(data[position : position + size])
        position += size
    streamed = hasher.finish()
    assert streamed.root == bytes(compute_state_root(decoded))
    assert streamed.step == seed * 7 + 1
    assert streamed.layout == compute_state_layout(decoded)


def _raw(header: bytes, payload: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + payload


def _file(header: dict, payload: bytes) -> bytes:
    return _raw(json.dumps(header).encode(), payload)


STEP = {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}
MALFORMED = {
    "no step": _file({"param/a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"0000"),
    "gap": _file(
        {"step": STEP, "param/a": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}},
        bytes(16),
    ),
    "overlap": _file(
        {"step": STEP, "param/a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        bytes(12),
    ),
    "wrong size": _file(
        {"step": STEP, "param/a": {"dtype": "F32", "shape": [3], "data_offsets": [8, 16]}},
        bytes(16),
    ),
    "bf16": _file(
        {"step": STEP, "param/a": {"dtype": "BF16", "shape": [1], "data_offsets": [8, 10]}},
        bytes(10),
    ),
    "foreign name": _file(
        {"step": STEP, "other": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
        bytes(12),
    ),
    "trailing bytes": _file({"step": STEP}, bytes(9)),
    "truncated": _file({"step": STEP}, bytes(8))[:-1],
    "header too long": struct.pack("<Q", 2**40) + b"{}",
    "not json": struct.pack("<Q", 4) + b"\xff\xfe{}" + bytes(8),
    "duplicate": _raw(
        b'{"step": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},'
        b' "step": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}',
        bytes(8),
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_checkpoint_corrupt(case):
    with pytest.raises(CheckpointCorrupt):
        compute_streamed_state(MALFORMED[case])


def test_a_copied_hasher_continues_independently(tmp_path):
    """`copy` is what lets a part be tried and dropped: the original is untouched."""
    data = encode_state(_state(3))
    half = len(data) // 2
    hasher = StateStreamHasher(len(data))
    hasher.update(data[:half])
    tried = hasher.copy()
    tried.update(b"\x00" * (len(data) - half))  # a part that will be refused
    hasher.update(data[half:])
    assert hasher.finish().root == bytes(compute_state_root(decode_state(data)))


def test_running_digests_count_only_parts_that_were_kept(tmp_path):
    """A session's hashes as its parts arrive equal a read of the whole file; a part that was
    tried but not kept leaves no trace; a replica that missed a part has none (the commit then
    reads the file)."""
    from coordinator.jobs.checkpoints import stream_state_file
    from coordinator.uploads.digests import RunningDigests

    data = encode_state(_state(5))
    path = tmp_path / "state.safetensors"
    path.write_bytes(data)
    parts = [data[i : i + 5000] for i in range(0, len(data), 5000)]
    digests = RunningDigests()
    offset = 0
    for part in parts:
        refused = digests.begin("up", "checkpoint", len(data), offset)
        refused.update(b"\xff" * len(part))  # a forged part, received then refused: not kept
        running = digests.begin("up", "checkpoint", len(data), offset)
        running.update(part)
        digests.keep("up", running)
        offset += len(part)
    assert digests.begin("other", "checkpoint", len(data), 5000) is None  # never saw byte 0
    assert digests.take("up").result() == stream_state_file(path)
    assert digests.take("up") is None  # taken once
