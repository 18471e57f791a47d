"""Presets: example job specs per model, sized to train in seconds on a laptop.

Each model's config and dataset come from its registry entry (`protocol.registry`); the rest of
the job is the same for every model.
"""

import copy
from typing import Any

from protocol.registry import get_model_entry
from protocol.spec import JobSpec, parse_job_spec


def example_job_spec_json(
    model: str, steps: int | None = None, profile: str = "pinned"
) -> dict[str, Any]:
    entry = get_model_entry(model)  # InvalidSpec naming model.name when it is not registered
    steps = steps if steps is not None else 40
    profile_json: dict[str, Any] = {"kind": profile}
    if profile == "pinned":
        profile_json.update(intra_op_threads=1, cpu_capability="avx2")
    return copy.deepcopy(
        {
            "version": 1,
            "model": {"name": model, "config": entry.example_config},
            "dataset": entry.example_dataset,
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
            "schedule": {"name": "cosine", "warmup_steps": min(5, steps)},
            "batch_size": 32,
            "steps": steps,
            "seed": 42,
            "checkpoint_interval": max(1, min(10, steps)),
            "profile": profile_json,
        }
    )


def example_job_spec(model: str, steps: int | None = None, profile: str = "pinned") -> JobSpec:
    return parse_job_spec(example_job_spec_json(model, steps, profile))
