"""The model registry: every model a job spec may name, and the example job that fits it.

One list, read by everyone: `protocol.spec` accepts exactly these names, `protocol.presets` builds
its examples from these entries, and `protocol.models` keys its definitions by them (a name with
no definition there is an `InternalError` at import). Torch-free on purpose: `protocol.spec` is
imported before a worker pins its execution profile, so it must not pull torch in.
"""

from dataclasses import dataclass
from typing import Any

from protocol.errors import InvalidSpec


@dataclass(frozen=True)
class ModelEntry:
    name: str
    example_config: dict[str, Any]  # `model.config` of the example job (laptop-sized)
    example_dataset: dict[str, Any]  # a `dataset` the model trains on


MODEL_ENTRIES: tuple[ModelEntry, ...] = (
    ModelEntry(
        "mlp",
        {"hidden": [64, 64], "dropout": 0.1},
        {
            "kind": "synthetic-classification",
            "seed": 1,
            "config": {"input_shape": [32], "classes": 10},
        },
    ),
    ModelEntry(
        "cnn",
        {"channels": [8, 16]},
        {
            "kind": "synthetic-classification",
            "seed": 1,
            "config": {"input_shape": [1, 16, 16], "classes": 10},
        },
    ),
    ModelEntry(
        "gpt-tiny",
        {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1},
        {"kind": "text", "config": {"context": 32}},
    ),
)
MODEL_NAMES: tuple[str, ...] = tuple(entry.name for entry in MODEL_ENTRIES)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; InvalidSpec (field `model.name`) when there is none."""
    for entry in MODEL_ENTRIES:
        if entry.name == name:
            return entry
    raise InvalidSpec(f"unknown model (known: {', '.join(MODEL_NAMES)})", "model.name")
