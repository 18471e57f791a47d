"""Presets: example job specs per model, sized to train in seconds on a laptop.

Each model's config and dataset come from its registry entry (`protocol.registry`); the rest of
the job is the same for every model.
"""

import copy
from typing import Any

from protocol.errors import InvalidSpec
from protocol.registry import get_model_entry
from protocol.spec import JobSpec, parse_job_spec

VOCAB_SIZE = 128  # the bundled text's (protocol.data; that module needs torch)


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


def example_onnx_job_spec_json(
    graph_sha256: str,
    input_shape: tuple[int, ...],
    language: bool,
    outputs: int,
    *,
    steps: int | None = None,
    profile: str = "repro",
    dataset_sha256: str | None = None,
) -> dict[str, Any]:
    """A job training the ONNX graph `graph_sha256`: batch size from the graph, a dataset that
    fits it (the user's file, else synthetic examples or the bundled text), four batches held
    out for the verified evaluation. InvalidSpec when no built-in dataset fits."""
    batch, *example = input_shape
    spec = example_job_spec_json("mlp", steps, profile)
    spec["model"] = {"name": "onnx", "sha256": graph_sha256}
    spec["batch_size"] = batch
    spec["evaluation"] = {"examples": 4 * batch}
    spec["dataset"] = _dataset_for_graph(example, language, outputs, dataset_sha256)
    return spec


def _dataset_for_graph(
    example: list[int], language: bool, outputs: int, dataset_sha256: str | None
) -> dict[str, Any]:
    context = {"context": example[0]} if language else {}
    if dataset_sha256:
        return {"kind": "safetensors", "sha256": dataset_sha256, "config": context}
    if language:
        if outputs != VOCAB_SIZE:
            raise InvalidSpec(
                f"the graph predicts {outputs} tokens; the bundled text has {VOCAB_SIZE}: give a"
                " token corpus (--dataset)",
                "dataset",
            )
        return {"kind": "text", "config": context}
    return {
        "kind": "synthetic-classification",
        "seed": 1,
        "config": {"input_shape": example, "classes": outputs},
    }


def example_job_spec(model: str, steps: int | None = None, profile: str = "pinned") -> JobSpec:
    return parse_job_spec(example_job_spec_json(model, steps, profile))
