"""Canonical state encoding: bit-exact round trips, NaN/inf, and located corruption."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import CheckpointCorrupt
from protocol.presets import example_job_spec
from protocol.state import (
    CHUNK_SIZE,
    compute_chunk_hashes,
    compute_chunk_layout,
    compute_state_root,
    decode_state,
    encode_state,
)
from protocol.training import build_program
from sdk.store import CheckpointStore

special_floats = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, -1e-45, 3.4e38, 1.0]
)


@st.composite
def states(draw):
    state = {"step": torch.tensor(draw(st.integers(0, 2**40)), dtype=torch.int64)}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        values = draw(
            st.lists(st.one_of(special_floats, st.floats(width=32)), min_size=0, max_size=40)
        )
        state[f"param/t{i}"] = torch.tensor(values, dtype=dtype)
    return state


def bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@given(states())
def test_encoding_round_trips_bit_exactly(state):
    decoded = decode_state(encode_state(state))
    assert sorted(decoded) == sorted(state)
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.dtype and decoded[name].shape == tensor.shape
        assert bits(decoded[name]) == bits(tensor)
    assert compute_state_root(decoded) == compute_state_root(state)


def test_nan_and_inf_states_encode_deterministically():
    def make():
        return {
            "step": torch.tensor(3),
            "param/x": torch.tensor([math.nan, math.inf, -math.inf, -0.0]),
        }

    assert encode_state(make()) == encode_state(make())
    assert compute_state_root(make()) == compute_state_root(make())
    signed_zero = make()
    signed_zero["param/x"][3] = 0.0  # -0.0 and 0.0 compare equal but are different states
    assert compute_state_root(signed_zero) != compute_state_root(make())


def test_chunks_split_large_tensors_and_name_them():
    state = {"step": torch.tensor(0), "param/big": torch.zeros(CHUNK_SIZE // 4 * 2 + 1)}
    layout = compute_chunk_layout(state)
    assert [ref.tensor for ref in layout] == ["param/big"] * 3 + ["step"]
    assert len(compute_chunk_hashes(state)) == 4
    assert layout[2].end - layout[2].start == 4


def test_renaming_or_reshaping_a_tensor_changes_the_root():
    base = {"step": torch.tensor(0), "param/a": torch.arange(6, dtype=torch.float32)}
    renamed = {"step": torch.tensor(0), "param/b": torch.arange(6, dtype=torch.float32)}
    reshaped = {
        "step": torch.tensor(0),
        "param/a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    }
    roots = {compute_state_root(s) for s in (base, renamed, reshaped)}
    assert len(roots) == 3


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    spec = example_job_spec("mlp", steps=2)
    program = build_program(spec)
    store = CheckpointStore.create(tmp_path_factory.mktemp("run"), spec)
    state = program.initial_state()
    store.write_checkpoint(state)
    return store.directory


@settings(max_examples=60)
@given(st.data())
def test_any_flipped_byte_is_detected_and_located(checkpoint_dir, data):
    store = CheckpointStore.open(checkpoint_dir)
    path = store.checkpoint_path(0)
    original = path.read_bytes()
    header_size = int.from_bytes(original[:8], "little") + 8
    position = data.draw(st.integers(0, len(original) - 1))
    corrupted = bytearray(original)
    corrupted[position] ^= 1 << data.draw(st.integers(0, 7))
    path.write_bytes(bytes(corrupted))
    try:
        with pytest.raises(CheckpointCorrupt) as caught:
            store.load_checkpoint(0)
        if position >= header_size:  # a data byte: the chunk holding it is named
            layout = compute_chunk_layout(decode_state(original))
            assert caught.value.chunk_index is not None
            assert layout[caught.value.chunk_index].tensor == caught.value.tensor
    finally:
        path.write_bytes(original)
    store.load_checkpoint(0)


def test_decode_rejects_garbage_and_foreign_tensors():
    with pytest.raises(CheckpointCorrupt):
        decode_state(b"not safetensors at all")
    from safetensors.torch import save

    with pytest.raises(CheckpointCorrupt, match="step"):
        decode_state(save({"param/x": torch.zeros(2)}))
    with pytest.raises(CheckpointCorrupt, match="unexpected tensor"):
        decode_state(save({"step": torch.tensor(0), "evil": torch.zeros(2)}))
