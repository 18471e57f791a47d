"""Datasets: seeded synthetic sets, the bundled text, or a user's safetensors file by SHA-256.

A dataset is built from its spec (and, for safetensors, the file's bytes handed in by the caller);
batches are picked by `protocol.rng.compute_batch_indices`, so data order depends on (seed, step)
alone.
"""

import hashlib
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from protocol.corpus import DECLARATION_OF_INDEPENDENCE
from protocol.errors import InvalidSpec
from protocol.rng import make_generator
from protocol.spec import JobSpec

VOCAB_SIZE = 128  # ASCII bytes
MAX_EXAMPLES = 1_000_000
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Dataset:
    task: str  # "classification" | "regression" | "language"
    inputs: torch.Tensor  # examples along dim 0; for language a 1-D token stream
    targets: torch.Tensor
    num_outputs: int  # classes, regression outputs, or vocabulary size
    context: int = 0  # language models: tokens per example

    @property
    def size(self) -> int:
        if self.task == "language":
            return self.inputs.numel() - self.context
        return self.inputs.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.task == "language":
            window = indices[:, None] + torch.arange(self.context)[None, :]
            return self.inputs[window], self.inputs[window + 1]
        return self.inputs[indices], self.targets[indices]


def _config_int(config: dict, key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(f"must be an integer between {low} and {high}", f"dataset.config.{key}")
    return value


def _config_shape(config: dict, key: str, default: list[int]) -> tuple[int, ...]:
    value = config.get(key, default)
    if not isinstance(value, list) or not 1 <= len(value) <= 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value
    ):
        raise InvalidSpec("must be a list of 1 to 3 positive integers", f"dataset.config.{key}")
    return tuple(value)


def _check_config_keys(config: dict, allowed: set[str]) -> None:
    for key in sorted(set(config) - allowed):
        raise InvalidSpec("unknown field", f"dataset.config.{key}")


def _synthetic_classification(spec: JobSpec, dtype: torch.dtype) -> Dataset:
    config = spec.dataset.config
    _check_config_keys(config, {"examples", "input_shape", "classes", "noise_percent"})
    n = _config_int(config, "examples", 1024, 1, MAX_EXAMPLES)
    shape = _config_shape(config, "input_shape", [32])
    classes = _config_int(config, "classes", 10, 2, 1000)
    noise = _config_int(config, "noise_percent", 50, 0, 1000) / 100.0
    generator = make_generator(spec.dataset.seed, "dataset", "prototypes")
    prototypes = torch.rand((classes, *shape), generator=generator, dtype=dtype) * 2 - 1
    labels = torch.randint(0, classes, (n,), generator=generator)
    noise_values = (torch.rand((n, *shape), generator=generator, dtype=dtype) * 2 - 1) * noise
    return Dataset("classification", prototypes[labels] + noise_values, labels, classes)


def _synthetic_regression(spec: JobSpec, dtype: torch.dtype) -> Dataset:
    config = spec.dataset.config
    _check_config_keys(config, {"examples", "input_shape", "outputs", "noise_percent"})
    n = _config_int(config, "examples", 1024, 1, MAX_EXAMPLES)
    shape = _config_shape(config, "input_shape", [16])
    outputs = _config_int(config, "outputs", 1, 1, 1000)
    noise = _config_int(config, "noise_percent", 10, 0, 1000) / 100.0
    generator = make_generator(spec.dataset.seed, "dataset", "teacher")
    inputs = torch.rand((n, *shape), generator=generator, dtype=dtype) * 2 - 1
    teacher = torch.rand((outputs, inputs[0].numel()), generator=generator, dtype=dtype) * 2 - 1
    clean = inputs.reshape(n, -1) @ teacher.T
    targets = clean + (torch.rand(clean.shape, generator=generator, dtype=dtype) * 2 - 1) * noise
    return Dataset("regression", inputs, targets, outputs)


def _text(spec: JobSpec) -> Dataset:
    config = spec.dataset.config
    _check_config_keys(config, {"context"})
    context = _config_int(config, "context", 32, 2, 1024)
    tokens = torch.tensor(list(DECLARATION_OF_INDEPENDENCE.encode("ascii")), dtype=torch.int64)
    if tokens.numel() <= context + 1:
        raise InvalidSpec("longer than the bundled text", "dataset.config.context")
    return Dataset("language", tokens, tokens, VOCAB_SIZE, context)


def _user_safetensors(spec: JobSpec, blob: bytes | None, dtype: torch.dtype) -> Dataset:
    if blob is None:
        raise InvalidSpec("a safetensors dataset needs its file", "dataset")
    if hashlib.sha256(blob).hexdigest() != spec.dataset.sha256:
        raise InvalidSpec("the dataset file's SHA-256 does not match", "dataset.sha256")
    return compute_file_dataset(blob, dtype)


def compute_file_dataset(blob: bytes, dtype: torch.dtype = torch.float32) -> Dataset:
    """A user's safetensors dataset file: 'inputs' (N, ...) float, 'targets' int64 (N,) labels
    or float (N, outputs). Raises InvalidSpec naming what is wrong."""
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise InvalidSpec(f"not a readable safetensors file ({err})", "dataset") from err
    inputs, targets = tensors.get("inputs"), tensors.get("targets")
    if inputs is None or targets is None or inputs.dim() < 2 or inputs.shape[0] != targets.shape[0]:
        raise InvalidSpec("needs tensors 'inputs' (N, ...) and 'targets' (N, ...)", "dataset")
    if not inputs.is_floating_point():
        raise InvalidSpec("'inputs' must be floating point", "dataset")
    inputs = inputs.to(dtype)
    if targets.dtype == torch.int64 and targets.dim() == 1:
        if targets.numel() == 0 or targets.min() < 0:
            raise InvalidSpec("class labels must be non-negative", "dataset")
        return Dataset("classification", inputs, targets, int(targets.max()) + 1)
    if targets.is_floating_point() and targets.dim() == 2:
        return Dataset("regression", inputs, targets.to(dtype), targets.shape[1])
    raise InvalidSpec("'targets' must be int64 (N,) labels or float (N, outputs)", "dataset")


def load_dataset(spec: JobSpec, blob: bytes | None = None) -> Dataset:
    dtype = DTYPES[spec.profile.dtype]
    kind = spec.dataset.kind
    if kind == "synthetic-classification":
        return _synthetic_classification(spec, dtype)
    if kind == "synthetic-regression":
        return _synthetic_regression(spec, dtype)
    if kind == "text":
        return _text(spec)
    return _user_safetensors(spec, blob, dtype)
