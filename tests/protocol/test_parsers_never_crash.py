"""Every parser of a peer's bytes or JSON either returns or raises a typed VeritrainError.

Anything else (IndexError, struct.error, RecursionError, OverflowError...) would reach the
coordinator as a 500 and, worse, say nothing about who was at fault.
"""

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.data import compute_file_dataset
from protocol.dispute import Move
from protocol.errors import VeritrainError
from protocol.presets import example_job_spec_json
from protocol.spec import parse_job_spec
from protocol.state import decode_state

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
DTYPES = ["F32", "F64", "I64", "I32", "BOOL", "U8", "F16", "XX"]
NAMES = st.sampled_from(["step", "inputs", "targets", "param/w", "opt/m/w", "x"])


def _returns_or_raises_typed(parse, value) -> None:
    with contextlib.suppress(VeritrainError):  # anything else propagates and fails the test
        parse(value)


@st.composite
def safetensors_like(draw) -> bytes:
    """A header that mostly parses, so the checks after safetensors' own run too."""
    tensors, offset = {}, 0
    for name in draw(st.lists(NAMES, max_size=4, unique=True)):
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = draw(st.integers(0, 48))
        tensors[name] = {
            "dtype": draw(st.sampled_from(DTYPES)),
            "shape": shape,
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(tensors).encode()
    data = draw(st.binary(min_size=offset, max_size=offset + 2))
    return struct.pack("<Q", len(header)) + header + data


BLOBS = st.binary(max_size=256) | safetensors_like()


@settings(max_examples=300)
@given(BLOBS)
def test_decode_state_never_crashes(data):
    _returns_or_raises_typed(decode_state, data)


@settings(max_examples=300)
@given(BLOBS)
def test_dataset_parser_never_crashes(data):
    _returns_or_raises_typed(compute_file_dataset, data)


@settings(max_examples=300)
@given(JSON)
def test_parse_job_spec_never_crashes_on_any_json(obj):
    _returns_or_raises_typed(parse_job_spec, obj)


SPEC_PATHS = [
    ("model",),
    ("model", "config"),
    ("dataset",),
    ("dataset", "config"),
    ("optimizer",),
    ("schedule",),
    ("profile",),
]


@settings(max_examples=300)
@given(st.sampled_from(SPEC_PATHS), st.text(max_size=8), JSON)
def test_parse_job_spec_never_crashes_on_a_damaged_valid_spec(path, key, junk):
    spec = example_job_spec_json("mlp")
    target = spec
    for part in path:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target
    if isinstance(target, dict):
        target[key] = junk
    _returns_or_raises_typed(parse_job_spec, spec)


@settings(max_examples=300)
@given(JSON)
def test_move_from_json_never_crashes_on_any_json(obj):
    _returns_or_raises_typed(Move.from_json, obj)


@settings(max_examples=300)
@given(st.fixed_dictionaries({k: JSON for k in ("party", "kind", "round", "payload", "signature")}))
def test_move_from_json_never_crashes_on_a_move_shaped_object(obj):
    _returns_or_raises_typed(Move.from_json, obj)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_config_values_are_refused(value):
    spec = example_job_spec_json("mlp")
    spec["model"]["config"]["hidden"] = [8, value]
    with pytest.raises(VeritrainError) as refused:
        parse_job_spec(spec)
    assert refused.value.field == "model.config.hidden[1]"


def test_a_config_nested_thousands_deep_is_refused_not_a_recursion_error():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    spec = example_job_spec_json("mlp")
    spec["dataset"]["config"]["input_shape"] = deep
    with pytest.raises(VeritrainError) as refused:
        parse_job_spec(spec)
    assert refused.value.field.startswith("dataset.config.input_shape")
