"""Limits on what a job may make a worker allocate, so that every job the coordinator accepts is one
an honest solver can train, checkpoint and upload.

Read by `protocol.training.check_runnable_spec` (the one validator the coordinator runs at
submission and the daemons run before they bid or replay). Torch-free: the sizes are computed
from the spec and from shapes, never by allocating.
"""

import math

from protocol.errors import InvalidSpec
from protocol.spec import JobSpec

# A synthetic dataset is generated in full by whoever builds the program (the coordinator at
# submission included): examples × values per example, bounded before anything is allocated.
MAX_DATASET_VALUES = 2**22
# A synthetic regression set's targets are inputs @ teacher: examples × input values × outputs.
MAX_REGRESSION_WORK = 2**26
# The defaults `protocol.data` applies when a synthetic config omits a key are no larger than these.
DEFAULT_EXAMPLES_BOUND = 1024
DEFAULT_INPUT_VALUES_BOUND = 32
# A training state (parameters and optimizer slots): what a solver, a verifier and the referee
# each hold in memory to step it (about 3× it at peak: docs/production.md, "Memory"). Files are
# written and read a tensor at a time and uploads stream to the blob store, so nothing else
# bounds it; a coordinator replica never holds one (docs/decisions.md, "Gigabyte states").
MAX_STATE_BYTES = 4 * 2**30
DTYPE_BYTES = {"float32": 4, "float64": 8}
SYNTHETIC_KINDS = ("synthetic-classification", "synthetic-regression")


def compute_synthetic_dataset_values(spec: JobSpec) -> int:
    """An upper bound on the values a synthetic dataset's inputs take; 0 for other kinds, and for
    configs `protocol.data` refuses by name anyway (wrong types)."""
    if spec.dataset.kind not in SYNTHETIC_KINDS:
        return 0
    config = spec.dataset.config
    examples = config.get("examples", DEFAULT_EXAMPLES_BOUND)
    shape = config.get("input_shape", [DEFAULT_INPUT_VALUES_BOUND])
    if not isinstance(examples, int) or not isinstance(shape, list):
        return 0
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return 0
    return max(examples, 0) * math.prod(shape)


def compute_regression_outputs(spec: JobSpec) -> int:
    outputs = spec.dataset.config.get("outputs", 1)
    if spec.dataset.kind != "synthetic-regression" or not isinstance(outputs, int):
        return 1
    return max(outputs, 1)


def check_dataset_size(spec: JobSpec) -> None:
    """Before the dataset is built: a synthetic set stays under MAX_DATASET_VALUES (and a
    regression set's teacher product under MAX_REGRESSION_WORK)."""
    values = compute_synthetic_dataset_values(spec)
    if values > MAX_DATASET_VALUES:
        raise InvalidSpec(
            f"examples × input values must not exceed {MAX_DATASET_VALUES}", "dataset.config"
        )
    if values * compute_regression_outputs(spec) > MAX_REGRESSION_WORK:
        raise InvalidSpec(
            f"examples × input values × outputs must not exceed {MAX_REGRESSION_WORK}",
            "dataset.config.outputs",
        )


def compute_state_bytes(spec: JobSpec, parameters: int, optimizer_slots: int) -> int:
    """Bytes of a training state: each parameter and each of its optimizer slots."""
    return parameters * (1 + optimizer_slots) * DTYPE_BYTES[spec.profile.dtype]


def check_state_size(spec: JobSpec, parameters: int, optimizer_slots: int) -> None:
    if compute_state_bytes(spec, parameters, optimizer_slots) > MAX_STATE_BYTES:
        raise InvalidSpec(
            f"the model's {parameters} parameters with their optimizer state exceed "
            f"{MAX_STATE_BYTES} bytes (a state must fit a worker's memory)",
            "model.config",
        )
