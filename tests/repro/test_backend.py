"""The reference is a complete spec: whole training steps on it give the compiled kernels' state
roots. Without the compiled kernels, repro jobs are refused as a scheduling error and daemons stop
advertising the repro profile."""

import importlib.util
import sys

import pytest

import protocol.repro.functions
import protocol.repro.ops
from protocol.errors import ProfileMismatch
from protocol.presets import example_job_spec_json
from protocol.repro import backend, reference
from protocol.spec import parse_job_spec
from protocol.state import compute_state_root
from protocol.training import build_program
from sdk.worker import get_runnable_profiles

TINY_CONFIGS = {
    "mlp": {"hidden": [16, 8], "dropout": 0.2},
    "cnn": {"channels": [3, 4]},
    "gpt-tiny": {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.1},
}


def tiny_repro_spec(model: str, optimizer: str) -> dict:
    spec = example_job_spec_json(model, steps=2, profile="repro")
    spec.update(batch_size=4)
    spec["model"]["config"] = TINY_CONFIGS[model]
    if model == "gpt-tiny":
        spec["dataset"]["config"]["context"] = 8
    if optimizer == "sgd":
        spec["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    return spec


def roots_after_two_steps(spec: dict) -> list[bytes]:
    program = build_program(parse_job_spec(spec))
    state = program.initial_state()
    roots = []
    for _ in range(2):
        state = program.step(state)
        roots.append(compute_state_root(state))
    return roots


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt-tiny"])
def test_training_on_the_reference_gives_the_compiled_kernels_roots(model, optimizer, monkeypatch):
    spec = tiny_repro_spec(model, optimizer)
    compiled = roots_after_two_steps(spec)
    for module in (protocol.repro.functions, protocol.repro.ops):
        monkeypatch.setattr(module, "get_backend", lambda device: reference)
    assert roots_after_two_steps(spec) == compiled


def test_missing_kernels_refuse_repro_jobs_and_are_not_advertised(monkeypatch):
    monkeypatch.setattr(backend, "_cpu", None)
    monkeypatch.setitem(sys.modules, "protocol.repro._fixed_order", None)  # import now fails
    monkeypatch.delattr(protocol.repro, "_fixed_order", raising=False)
    with pytest.raises(ProfileMismatch, match="compiled fixed-order kernels"):
        backend.get_cpu_kernels()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.endswith("_fixed_order") else real_find_spec(name, *a),
    )
    labels = get_runnable_profiles()
    assert labels and not any(label.startswith("repro:") for label in labels)


def test_built_kernels_are_advertised():
    assert any(label.startswith("repro:fo1:") for label in get_runnable_profiles())
