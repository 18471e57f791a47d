"""Presets: example job specs per model, sized to train in seconds on a laptop."""

import copy
from typing import Any

from protocol.errors import InvalidSpec
from protocol.spec import MODELS, JobSpec, parse_job_spec

_DATASETS: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "synthetic-classification", "seed": 1, "config": {"input_shape": [32], "classes": 10}},
    "cnn": {"kind": "synthetic-classification", "seed": 1, "config": {"input_shape": [1, 16, 16], "classes": 10}},
    "gpt-tiny": {"kind": "text", "config": {"context": 32}},
}
_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [64, 64], "dropout": 0.1},
    "cnn": {"channels": [8, 16]},
    "gpt-tiny": {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1},
}


def example_job_spec_json(model: str, steps: int | None = None, profile: str = "pinned") -> dict[str, Any]:
    if model not in MODELS:
        raise InvalidSpec(f"unknown model (known: {', '.join(MODELS)})", "model.name")
    steps = steps if steps is not None else 40
    profile_json: dict[str, Any] = {"kind": profile}
    if profile == "pinned":
        profile_json.update(intra_op_threads=1, cpu_capability="avx2")
    return copy.deepcopy({
        "version": 1,
        "model": {"name": model, "config": _MODEL_CONFIGS[model]},
        "dataset": _DATASETS[model],
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": min(5, steps)},
        "batch_size": 32,
        "steps": steps,
        "seed": 42,
        "checkpoint_interval": max(1, min(10, steps)),
        "profile": profile_json,
    })


def example_job_spec(model: str, steps: int | None = None, profile: str = "pinned") -> JobSpec:
    return parse_job_spec(example_job_spec_json(model, steps, profile))
