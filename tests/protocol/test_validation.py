"""The shared validators and the one model registry: typed errors naming the field, and every
reader of the model list (spec, presets, definitions) reading the same list."""

import math

import pytest

from protocol.errors import InternalError, InvalidSpec
from protocol.models import _DEFINITIONS, MODEL_REGISTRY, compute_model_registry
from protocol.presets import example_job_spec_json
from protocol.registry import MODEL_ENTRIES, MODEL_NAMES, get_model_entry
from protocol.spec import MODELS, parse_job_spec
from protocol.validation import (
    get_bool,
    get_choice,
    get_float,
    get_int,
    get_int_list,
    get_object,
    get_probability,
    join_field,
    validate_keys,
)


def refused_field(read, *args, **kwargs) -> str:
    with pytest.raises(InvalidSpec) as caught:
        read(*args, **kwargs)
    return caught.value.field


def test_fields_are_named_by_their_dotted_path():
    assert join_field("", "steps") == "steps"
    assert join_field("model.config", "hidden") == "model.config.hidden"
    assert refused_field(get_int, {"n": "1"}, "n", "a.b", low=0, high=9) == "a.b.n"
    assert refused_field(get_object, [], "profile") == "profile"


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, -1, 10])
def test_integers_are_integers_in_range_and_never_bools(value):
    assert refused_field(get_int, {"n": value}, "n", "", low=0, high=9) == "n"


def test_integers_default_when_absent_and_are_required_without_a_default():
    assert get_int({}, "n", "", low=0, high=9, default=3) == 3
    assert get_int({"n": 9}, "n", "", low=0, high=9) == 9
    assert refused_field(get_int, {}, "n", "", low=0, high=9) == "n"


@pytest.mark.parametrize("value", [math.nan, math.inf, True, "0.1", None, -0.5, 2])
def test_floats_refuse_nan_bools_strings_and_out_of_range(value):
    assert refused_field(get_float, {"x": value}, "x", "o", low=0.0, high=1.0, default=0.5) == "o.x"


def test_floats_accept_integers_as_floats():
    value = get_float({"x": 1}, "x", "", low=0.0, high=1.0, default=0.5)
    assert value == 1.0 and isinstance(value, float)


@pytest.mark.parametrize("value", [1.0, 1, -0.1, True, math.nan])
def test_probabilities_are_half_open(value):
    assert refused_field(get_probability, {"p": value}, "p", "m", default=0.0) == "m.p"
    assert get_probability({"p": 0.999}, "p", "m", default=0.0) == 0.999


@pytest.mark.parametrize("value", [[], [1] * 4, [0], [True], [1.0], "1", None])
def test_int_lists_have_bounded_length_and_items(value):
    assert (
        refused_field(get_int_list, {"l": value}, "l", "c", low=1, high=9, max_items=3, default=[1])
        == "c.l"
    )
    assert get_int_list({}, "l", "c", low=1, high=9, max_items=3, default=[2, 3]) == [2, 3]


def test_choices_and_bools():
    assert get_choice({}, "k", "", choices=("a", "b"), default="b") == "b"
    assert refused_field(get_choice, {"k": "c"}, "k", "", choices=("a", "b")) == "k"
    assert refused_field(get_bool, {"b": 1}, "b", "p", default=True) == "p.b"


def test_unknown_keys_are_named_before_missing_ones_in_sorted_order():
    obj = {"zeta": 1, "alpha": 2}
    assert refused_field(validate_keys, obj, "x", required={"need"}, optional={"alpha"}) == "x.zeta"
    assert refused_field(validate_keys, {}, "", required={"b", "a"}) == "a"
    validate_keys({"a": 1}, "", required={"a"}, optional={"b"})  # no error


def test_spec_presets_and_definitions_read_one_model_list():
    assert MODELS == MODEL_NAMES == tuple(MODEL_REGISTRY)
    for entry in MODEL_ENTRIES:
        spec = parse_job_spec(example_job_spec_json(entry.name))
        assert spec.model.config == entry.example_config
        assert spec.dataset.kind == entry.example_dataset["kind"]


def test_an_unregistered_model_is_refused_everywhere_with_the_same_field():
    assert refused_field(get_model_entry, "resnet") == "model.name"
    assert refused_field(example_job_spec_json, "resnet") == "model.name"
    spec = example_job_spec_json("mlp")
    spec["model"]["name"] = "resnet"
    assert refused_field(parse_job_spec, spec) == "model.name"


def test_a_definition_missing_from_the_registry_or_extra_is_our_bug():
    with pytest.raises(InternalError):
        compute_model_registry({k: v for k, v in _DEFINITIONS.items() if k != "cnn"})
    with pytest.raises(InternalError):
        compute_model_registry({**_DEFINITIONS, "resnet": _DEFINITIONS["mlp"]})


def test_presets_are_copies_the_registry_cannot_be_changed_through():
    spec = example_job_spec_json("mlp")
    spec["model"]["config"]["hidden"].append(5)
    spec["dataset"]["config"]["classes"] = 3
    assert example_job_spec_json("mlp") != spec
    assert get_model_entry("mlp").example_config["hidden"] == [64, 64]
