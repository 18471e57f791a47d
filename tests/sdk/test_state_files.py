"""States on disk a tensor at a time: the encoder is byte-for-byte safetensors' own, the reader
accepts exactly the canonical bytes, and a program's layout is known without building a state.
A checkpoint's file hash is taken while it is written."""

import hashlib
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from protocol.errors import CheckpointCorrupt
from protocol.presets import example_job_spec
from protocol.state import (
    FORMAT_TAG,
    compute_chunk_layout,
    compute_encoded_size,
    compute_layout_bytes,
    compute_state_layout,
    compute_state_root,
    count_layout_chunks,
    encode_state,
)
from protocol.training import build_program
from sdk.state_files import read_state_file, write_hashed_state_file, write_state_file
from sdk.store import CheckpointStore

DTYPES = [torch.float32, torch.float64, torch.int64]


@st.composite
def mixed_states(draw):
    state = {"step": torch.tensor(draw(st.integers(-(2**40), 2**40)), dtype=torch.int64)}
    for i in range(draw(st.integers(0, 6))):
        prefix = draw(st.sampled_from(["param/", "opt/exp_avg/", "opt/momentum/"]))
        name = prefix + draw(st.text("abcxyz._", min_size=1, max_size=6)) + str(i)
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        dtype = draw(st.sampled_from(DTYPES))
        state[name] = torch.randint(-1000, 1000, shape).to(dtype) / (
            1 if dtype is torch.int64 else 7
        )
    return state


@settings(max_examples=150, deadline=None)
@given(mixed_states())
def test_our_encoding_is_safetensors_bytes_and_reads_back_bit_exactly(tmp_path_factory, state):
    reference = save({k: v.contiguous() for k, v in state.items()}, metadata={"format": FORMAT_TAG})
    assert encode_state(state) == reference
    path = tmp_path_factory.mktemp("state") / "s.safetensors"
    write_state_file(path, state)
    assert path.read_bytes() == reference
    back = read_state_file(path)
    assert sorted(back) == sorted(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(
            back[name].view(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)
        )
    assert compute_state_root(back) == compute_state_root(state)


def _state() -> dict[str, torch.Tensor]:
    return {"step": torch.tensor(4), "param/w": torch.arange(6.0).reshape(2, 3)}


def test_a_non_canonical_header_is_refused(tmp_path):
    """Same tensors, other metadata: the bytes differ, so the file is not the canonical state."""
    path = tmp_path / "s.safetensors"
    path.write_bytes(save(_state(), metadata={"format": "something-else"}))
    with pytest.raises(CheckpointCorrupt, match="canonical"):
        read_state_file(path)


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1])
def test_a_truncated_state_file_is_refused(tmp_path, cut):
    data = encode_state(_state())
    path = tmp_path / "s.safetensors"
    path.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    with pytest.raises(CheckpointCorrupt):
        read_state_file(path)


def test_a_header_claiming_more_than_the_file_is_refused(tmp_path):
    data = encode_state(_state())
    path = tmp_path / "s.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    with pytest.raises(CheckpointCorrupt, match="header"):
        read_state_file(path)


def test_a_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "s.safetensors"
    torch.save(_state(), path)  # a pickle archive: must be refused, not unpickled
    with pytest.raises(CheckpointCorrupt):
        read_state_file(path)


@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt-tiny"])
@pytest.mark.parametrize("profile", ["pinned", "repro"])
def test_a_programs_layout_from_shapes_alone_is_its_initial_states(model, profile):
    program = build_program(example_job_spec(model, profile=profile))
    state = program.initial_state()
    layout = program.state_layout()
    assert layout == compute_state_layout(state) and list(layout) == sorted(layout)
    assert count_layout_chunks(layout) == len(compute_chunk_layout(state))
    assert compute_layout_bytes(layout) == sum(t.numel() * t.element_size() for t in state.values())
    assert compute_encoded_size(layout) == len(encode_state(state))  # the one size a state has


@settings(max_examples=25, deadline=None)
@given(mixed_states())
def test_a_hashed_write_returns_the_files_sha256(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("hashed") / "state.safetensors"
    sha256 = write_hashed_state_file(path, state)
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes() == encode_state(state)


def test_a_checkpoint_store_keeps_each_files_sha256_from_its_write(tmp_path):
    spec = example_job_spec("mlp", steps=2)
    program = build_program(spec)
    store = CheckpointStore.create(tmp_path / "run", spec)
    store.write_checkpoint(program.initial_state())
    reopened = CheckpointStore.open(tmp_path / "run")
    on_disk = hashlib.sha256(reopened.checkpoint_path(0).read_bytes()).hexdigest()
    assert reopened.get_file_sha256(0) == on_disk
