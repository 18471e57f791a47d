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
from protocol.validation import get_int, get_int_list, validate_keys

VOCAB_SIZE = 128  # ASCII bytes
MAX_EXAMPLES = 1_000_000
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CONFIG = "dataset.config"  # where a dataset's settings sit in a job spec (error fields name it)


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


def _get_shape(config: dict, key: str, default: list[int]) -> tuple[int, ...]:
    return tuple(get_int_list(config, key, CONFIG, low=1, high=4096, max_items=3, default=default))


def _synthetic_classification(spec: JobSpec, dtype: torch.dtype) -> Dataset:
    config = spec.dataset.config
    validate_keys(config, CONFIG, optional={"examples", "input_shape", "classes", "noise_percent"})
    n = get_int(config, "examples", CONFIG, low=1, high=MAX_EXAMPLES, default=1024)
    shape = _get_shape(config, "input_shape", [32])
    classes = get_int(config, "classes", CONFIG, low=2, high=1000, default=10)
    noise = get_int(config, "noise_percent", CONFIG, low=0, high=1000, default=50) / 100.0
    generator = make_generator(spec.dataset.seed, "dataset", "prototypes")
    prototypes = torch.rand((classes, *shape), generator=generator, dtype=dtype) * 2 - 1
    labels = torch.randint(0, classes, (n,), generator=generator)
    noise_values = (torch.rand((n, *shape), generator=generator, dtype=dtype) * 2 - 1) * noise
    return Dataset("classification", prototypes[labels] + noise_values, labels, classes)


def _synthetic_regression(spec: JobSpec, dtype: torch.dtype) -> Dataset:
    config = spec.dataset.config
    validate_keys(config, CONFIG, optional={"examples", "input_shape", "outputs", "noise_percent"})
    n = get_int(config, "examples", CONFIG, low=1, high=MAX_EXAMPLES, default=1024)
    shape = _get_shape(config, "input_shape", [16])
    outputs = get_int(config, "outputs", CONFIG, low=1, high=1000, default=1)
    noise = get_int(config, "noise_percent", CONFIG, low=0, high=1000, default=10) / 100.0
    generator = make_generator(spec.dataset.seed, "dataset", "teacher")
    inputs = torch.rand((n, *shape), generator=generator, dtype=dtype) * 2 - 1
    teacher = torch.rand((outputs, inputs[0].numel()), generator=generator, dtype=dtype) * 2 - 1
    clean = inputs.reshape(n, -1) @ teacher.T
    targets = clean + (torch.rand(clean.shape, generator=generator, dtype=dtype) * 2 - 1) * noise
    return Dataset("regression", inputs, targets, outputs)


def _text(spec: JobSpec) -> Dataset:
    config = spec.dataset.config
    validate_keys(config, CONFIG, optional={"context"})
    context = get_int(config, "context", CONFIG, low=2, high=1024, default=32)
    tokens = torch.tensor(list(DECLARATION_OF_INDEPENDENCE.encode("ascii")), dtype=torch.int64)
    if tokens.numel() <= context + 1:
        raise InvalidSpec("longer than the bundled text", f"{CONFIG}.context")
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
    if (
        inputs is None
        or targets is None
        or inputs.dim() < 2
        or targets.dim() < 1  # a 0-d tensor has no length to match
        or inputs.shape[0] != targets.shape[0]
    ):
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
