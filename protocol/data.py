"""Datasets: seeded synthetic sets, the bundled text, or a user's safetensors file by SHA-256
(examples with targets, or a token corpus for language models).

A dataset is built from its spec (and, for safetensors, the file's bytes handed in by the caller);
batches are picked by `protocol.rng.compute_batch_indices`, so data order depends on (seed, step)
alone.
"""

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
MAX_CONTEXT = 4096  # tokens per example of a language dataset
MAX_VOCAB = 1 << 20  # a token corpus's vocabulary (the embedding's rows: the state limit binds too)
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

    def split(self, first_held_out: int) -> tuple["Dataset", "Dataset"]:
        """Examples before `first_held_out` and from it on, sharing no example: a language
        split cuts the token stream so no held-out window's tokens are trained on."""
        if self.task == "language":
            cut = first_held_out
            return (
                Dataset(
                    self.task, self.inputs[:cut], self.targets[:cut], self.num_outputs, self.context
                ),
                Dataset(
                    self.task, self.inputs[cut:], self.targets[cut:], self.num_outputs, self.context
                ),
            )
        parts = [
            (self.inputs[a:b], self.targets[a:b])
            for a, b in ((0, first_held_out), (first_held_out, None))
        ]
        return tuple(Dataset(self.task, x, y, self.num_outputs) for x, y in parts)

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


def _get_context(spec: JobSpec) -> int:
    """Tokens per example of a language dataset (the bundled text or a token corpus)."""
    config = spec.dataset.config
    validate_keys(config, CONFIG, optional={"context"})
    return get_int(config, "context", CONFIG, low=2, high=MAX_CONTEXT, default=32)


def _text(spec: JobSpec) -> Dataset:
    tokens = torch.tensor(list(DECLARATION_OF_INDEPENDENCE.encode("ascii")), dtype=torch.int64)
    return _language(tokens, VOCAB_SIZE, _get_context(spec))


def _language(tokens: torch.Tensor, vocab: int, context: int) -> Dataset:
    if tokens.numel() <= context + 1:
        raise InvalidSpec(
            f"needs more than context + 1 = {context + 1} tokens", f"{CONFIG}.context"
        )
    return Dataset("language", tokens, tokens, vocab, context)


def _user_safetensors(spec: JobSpec, blob: bytes | None, dtype: torch.dtype) -> Dataset:
    if blob is None:  # build_program hands in the file named by its SHA-256
        raise InvalidSpec("a safetensors dataset needs its file", "dataset")
    dataset = compute_file_dataset(blob, dtype)
    if dataset.task == "language":
        return _language(dataset.inputs, dataset.num_outputs, _get_context(spec))
    validate_keys(spec.dataset.config, CONFIG)  # only a token corpus takes a setting
    return dataset


def compute_file_dataset(blob: bytes, dtype: torch.dtype = torch.float32) -> Dataset:
    """A user's safetensors dataset file: a token corpus ('tokens' int64 (N,) and 'vocab_size'
    int64 scalar), or 'inputs' (N, ...) float with 'targets' int64 (N,) labels or float
    (N, outputs). Raises InvalidSpec naming what is wrong."""
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise InvalidSpec(f"not a readable safetensors file ({err})", "dataset") from err
    if "tokens" in tensors:
        return _token_corpus(tensors)
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


def _token_corpus(tensors: dict[str, torch.Tensor]) -> Dataset:
    """A language model's corpus: token ids in [0, vocab_size), trained with the spec's context
    (the context is the spec's; the file is checked on its own at upload)."""
    tokens, vocab = tensors["tokens"], tensors.get("vocab_size")
    if set(tensors) != {"tokens", "vocab_size"} or vocab is None:
        raise InvalidSpec("a token corpus holds exactly 'tokens' and 'vocab_size'", "dataset")
    if tokens.dtype != torch.int64 or tokens.dim() != 1 or tokens.numel() < 2:
        raise InvalidSpec("'tokens' must be int64 of shape (N,), N ≥ 2", "dataset")
    if vocab.dtype != torch.int64 or vocab.dim() != 0 or not 2 <= int(vocab) <= MAX_VOCAB:
        raise InvalidSpec(f"'vocab_size' must be an int64 scalar in [2, {MAX_VOCAB}]", "dataset")
    if int(tokens.min()) < 0 or int(tokens.max()) >= int(vocab):
        raise InvalidSpec("every token must lie in [0, vocab_size)", "dataset")
    return Dataset("language", tokens, tokens, int(vocab), 0)


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
