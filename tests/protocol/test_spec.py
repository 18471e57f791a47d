"""Job specs: validation that names the field, canonical encoding, stable job ids."""

import copy
import hashlib

import pytest
import torch
from safetensors.torch import save

from protocol.errors import InvalidSpec
from protocol.job_files import collect_job_files
from protocol.limits import MAX_DATASET_VALUES
from protocol.presets import example_job_spec_json
from protocol.spec import (
    MODELS,
    compute_checkpoint_steps,
    compute_job_id,
    encode_job_spec,
    parse_job_spec,
)
from protocol.training import build_program, check_runnable_spec, compute_parameter_count


def mutated(change, model="mlp"):
    spec = example_job_spec_json(model)
    change(spec)
    return spec


BAD_SPECS = [
    (lambda s: s.update(colour="blue"), "colour"),
    (lambda s: s.pop("steps"), "steps"),
    (lambda s: s.update(steps="ten"), "steps"),
    (lambda s: s.update(steps=0), "steps"),
    (lambda s: s.update(batch_size=True), "batch_size"),
    (lambda s: s.update(checkpoint_interval=10**9), "checkpoint_interval"),
    (lambda s: s["model"].update(name="resnet"), "model.name"),
    (lambda s: s["model"]["config"].update(depth=3), "model.config.depth"),
    (lambda s: s["model"]["config"].update(hidden=[0]), "model.config.hidden"),
    (lambda s: s["dataset"].update(kind="imagenet"), "dataset.kind"),
    (lambda s: s["dataset"]["config"].update(classes=1), "dataset.config.classes"),
    (lambda s: s["optimizer"].update(name="lion"), "optimizer.name"),
    (lambda s: s["optimizer"].update(lr=float("nan")), "optimizer.lr"),
    (lambda s: s["schedule"].update(name="linear"), "schedule.name"),
    (lambda s: s["profile"].update(cpu_capability="avx1024"), "profile.cpu_capability"),
    (lambda s: s["profile"].update(intra_op_threads=0), "profile.intra_op_threads"),
    (lambda s: s["profile"].update(kind="repro"), "profile.intra_op_threads"),
    (lambda s: s.update(profile={"kind": "repro", "dtype": "float64"}), "profile.dtype"),
    (lambda s: s.update(profile="fast"), "profile"),
    (lambda s: s.update(version=2), "version"),
    # the shared validators (protocol.validation) name the same fields spec, models and data did
    (lambda s: s.update(model=[]), "model"),
    (lambda s: s["model"].update(config={"hidden": True}), "model.config.hidden"),
    (lambda s: s["model"]["config"].update(dropout=1.0), "model.config.dropout"),
    (lambda s: s["model"]["config"].update(hidden=[8] * 9), "model.config.hidden"),
    (
        lambda s: s["dataset"]["config"].update(input_shape=[1, 2, 3, 4]),
        "dataset.config.input_shape",
    ),
    (lambda s: s["dataset"]["config"].update(examples=0), "dataset.config.examples"),
    (lambda s: s["dataset"].update(seed=-1), "dataset.seed"),
    (lambda s: s["optimizer"].update(lr=True), "optimizer.lr"),
    (lambda s: s["profile"].update(math_reproducible=1), "profile.math_reproducible"),
    (lambda s: s["schedule"].update(warmup_steps=10**6), "schedule.warmup_steps"),
]


@pytest.mark.parametrize(("change", "field"), BAD_SPECS)
def test_bad_specs_name_the_field(change, field):
    with pytest.raises(InvalidSpec) as caught:
        spec = parse_job_spec(mutated(change))
        build_program(spec)
    assert caught.value.field == field


def test_profile_labels_name_what_decides_the_bits():
    pinned = parse_job_spec(example_job_spec_json("mlp")).profile
    repro = parse_job_spec(example_job_spec_json("mlp", profile="repro")).profile
    assert pinned.label == "pinned:torch-2.13.0:float32:t1:avx2"
    assert repro.label == "repro:fo1:torch-2.13.0:float32"  # the kernel contract, no threads or ISA


def test_model_and_dataset_must_fit_together():
    spec = mutated(lambda s: s["dataset"].update(kind="text", config={}), "cnn")
    with pytest.raises(InvalidSpec) as caught:
        build_program(parse_job_spec(spec))
    assert caught.value.field == "dataset.config.input_shape"


@pytest.mark.parametrize("model", MODELS)
def test_examples_are_valid_and_ids_are_stable(model):
    spec_json = example_job_spec_json(model, steps=25)
    spec = parse_job_spec(spec_json)
    assert compute_job_id(spec) == compute_job_id(parse_job_spec(copy.deepcopy(spec_json)))
    assert parse_job_spec(__import__("json").loads(encode_job_spec(spec))) == spec
    assert compute_checkpoint_steps(spec) == [0, 10, 20, 25]


def test_any_field_change_changes_the_job_id():
    base = compute_job_id(parse_job_spec(example_job_spec_json("mlp")))
    other = compute_job_id(parse_job_spec(mutated(lambda s: s.update(seed=43))))
    assert base != other


def user_dataset_spec(blob: bytes, sha256: str | None = None):
    spec = example_job_spec_json("mlp")
    spec["dataset"] = {"kind": "safetensors", "sha256": sha256 or hashlib.sha256(blob).hexdigest()}
    return parse_job_spec(spec)


def test_user_safetensors_dataset_is_checked_by_hash():
    blob = save({"inputs": torch.rand(50, 8), "targets": torch.randint(0, 3, (50,))})
    program = build_program(user_dataset_spec(blob), collect_job_files([blob]))
    assert program.dataset.size == 50 and program.dataset.num_outputs == 3
    with pytest.raises(InvalidSpec) as caught:
        build_program(user_dataset_spec(blob, "00" * 32), collect_job_files([blob]))
    assert caught.value.field == "dataset.sha256"
    with pytest.raises(InvalidSpec) as caught:
        build_program(user_dataset_spec(blob), None)
    assert caught.value.field == "dataset.sha256"
    with pytest.raises(InvalidSpec) as caught:  # a file under another's hash stands for nothing
        build_program(user_dataset_spec(blob), {hashlib.sha256(blob).hexdigest(): blob + b" "})
    assert caught.value.field == "dataset.sha256"


# --- the runnable-spec validator (protocol.training.check_runnable_spec) ------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_example_job_is_runnable(model):
    check_runnable_spec(parse_job_spec(example_job_spec_json(model)))


def test_parameter_count_matches_the_allocated_state():
    program = build_program(parse_job_spec(example_job_spec_json("gpt-tiny")))
    allocated = sum(v.numel() for k, v in program.initial_state().items() if k.startswith("param/"))
    assert compute_parameter_count(program) == allocated


UNRUNNABLE = [
    (lambda s: s["model"]["config"].update(width=4), "mlp", "model.config.width"),
    (lambda s: s["model"]["config"].update(hidden=[8192] * 8), "mlp", "model.config"),
    (
        lambda s: s["model"]["config"].update(d_model=4096, layers=48, heads=64),
        "gpt-tiny",
        "model.config",
    ),
    (
        lambda s: s["dataset"]["config"].update(examples=MAX_DATASET_VALUES, input_shape=[2]),
        "mlp",
        "dataset.config",
    ),
    (
        lambda s: s.update(
            dataset={
                "kind": "synthetic-regression",
                "config": {"input_shape": [512], "outputs": 1000},
            }
        ),
        "mlp",
        "dataset.config.outputs",
    ),
]


@pytest.mark.parametrize("change, model, field", UNRUNNABLE)
def test_an_unrunnable_spec_is_refused_naming_the_field(change, model, field):
    with pytest.raises(InvalidSpec) as err:
        check_runnable_spec(parse_job_spec(mutated(change, model)))
    assert err.value.field == field


@pytest.mark.parametrize("version", ["2." * 100_000, "2.13.0:float64", "", "2 13"])
def test_a_torch_version_that_would_break_the_label_is_refused(version):
    with pytest.raises(InvalidSpec) as err:
        parse_job_spec(mutated(lambda s: s["profile"].update(torch_version=version)))
    assert err.value.field == "profile.torch_version"
