"""Job specs and execution profiles: typed, validated, canonically encoded.

The job id is SHA-256 over the canonical JSON of the spec, so two parties that agree on a spec
agree on its id byte for byte.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.errors import InvalidSpec
from protocol.registry import MODEL_NAMES
from protocol.types import JobId, StepIndex
from protocol.validation import (
    get_bool,
    get_choice,
    get_float,
    get_int,
    get_object,
    is_hex,
    join_field,
    validate_json_tree,
    validate_keys,
)

SPEC_VERSION = 1
TORCH_VERSION = "2.13.0"
PROFILE_KINDS = ("pinned", "repro")
CPU_CAPABILITIES = ("default", "avx2", "avx512")
DTYPES = ("float32", "float64")
# The repro profile's arithmetic contract (protocol/repro/reference.py); part of its label, so a
# change of contract can never be matched against trajectories computed under the old one.
REPRO_CONTRACT = "fo1"
# fo1 with the batch cut into `profile.batch_blocks` row blocks whose gradients are summed by a
# fixed pairwise tree (docs/parallel.md): what lets any allowed world size give one trajectory.
REPRO_BLOCKED_CONTRACT = "fo2"
MAX_BATCH_BLOCKS = 1024
REPRO_DTYPES = ("float32",)
MODELS = MODEL_NAMES  # the registry's built-in models (protocol/registry.py)
ONNX_MODEL = "onnx"  # a user's ONNX training graph, named by its file's SHA-256 (docs/onnx.md)
DATASET_KINDS = ("synthetic-classification", "synthetic-regression", "text", "safetensors")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536
MAX_EVAL_EXAMPLES = 65_536
MAX_EVAL_BATCHES = 64
MAX_CONFIG_DEPTH = 8
MAX_CONFIG_VALUES = 1024
MAX_CONFIG_STRING = 256
# A profile's label is stored, matched and bid on in a 128-character column (coordinator models,
# BidRequest.profile); its torch version is a short dotted version string, never a separator.
MAX_PROFILE_LABEL = 128
TORCH_VERSION_PATTERN = re.compile(r"[0-9A-Za-z.+_-]{1,32}")


@dataclass(frozen=True)
class ExecutionProfile:
    """Everything that decides the bits of a training state besides the spec itself."""

    kind: str = "pinned"
    torch_version: str = TORCH_VERSION
    dtype: str = "float32"
    intra_op_threads: int | None = 1  # None: any (repro profiles only)
    cpu_capability: str | None = "avx2"  # None: any (repro profiles only)
    math_reproducible: bool = True  # MKL_CBWR / oneDNN pinned, mkldnn off
    deterministic: bool = True  # torch.use_deterministic_algorithms
    batch_blocks: int = 1  # repro only: 1 is fo1; a power of two > 1 is fo2 (docs/parallel.md)

    @property
    def contract(self) -> str | None:
        """The repro arithmetic contract its bits follow (None for pinned profiles)."""
        if self.kind != "repro":
            return None
        return REPRO_CONTRACT if self.batch_blocks == 1 else REPRO_BLOCKED_CONTRACT

    @property
    def label(self) -> str:
        """What solvers and verifiers advertise and the coordinator matches on. The block count
        is not in it: a party that runs fo2 runs it for any count (the job spec carries that)."""
        if self.kind == "repro":
            return f"repro:{self.contract}:torch-{self.torch_version}:{self.dtype}"
        return f"{self.kind}:torch-{self.torch_version}:{self.dtype}:t{self.intra_op_threads}:{self.cpu_capability}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None  # the ONNX graph's file (name == "onnx" only)
    weights: str | None = None  # a safetensors file of initial weights: checkpoint 0 is them


@dataclass(frozen=True)
class DatasetSpec:
    kind: str
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None  # required for kind == "safetensors"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class ScheduleSpec:
    name: str = "constant"
    warmup_steps: int = 0


@dataclass(frozen=True)
class EvaluationSpec:
    """The last `examples` examples of the dataset are held out of training; the final state
    carries the model's loss (and accuracy) on them, committed like every other tensor."""

    examples: int


@dataclass(frozen=True)
class JobSpec:
    model: ModelSpec
    dataset: DatasetSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    batch_size: int
    steps: int
    seed: int
    checkpoint_interval: int
    profile: ExecutionProfile
    version: int = SPEC_VERSION
    evaluation: EvaluationSpec | None = None


# --- parsing -----------------------------------------------------------------------------------


def parse_profile(obj: Any, path: str = "profile") -> ExecutionProfile:
    obj = get_object(obj, path)
    validate_keys(
        obj,
        path,
        required={"kind"},
        optional={
            "torch_version",
            "dtype",
            "intra_op_threads",
            "cpu_capability",
            "math_reproducible",
            "deterministic",
            "batch_blocks",
        },
    )
    kind = get_choice(obj, "kind", path, choices=PROFILE_KINDS)
    torch_version = obj.get("torch_version", TORCH_VERSION)
    if not isinstance(torch_version, str) or not TORCH_VERSION_PATTERN.fullmatch(torch_version):
        raise InvalidSpec(
            "must be a version string of at most 32 characters [0-9A-Za-z.+_-]",
            join_field(path, "torch_version"),
        )
    if kind == "repro":
        for pinned_only in ("intra_op_threads", "cpu_capability"):
            if obj.get(pinned_only) is not None:
                raise InvalidSpec(
                    "repro profiles run on any threads and ISA; omit it",
                    join_field(path, pinned_only),
                )
        threads, capability = None, None
    else:
        threads = get_int(obj, "intra_op_threads", path, low=1, high=256, default=1)
        capability = get_choice(
            obj, "cpu_capability", path, choices=CPU_CAPABILITIES, default="avx2"
        )
    dtype = get_choice(obj, "dtype", path, choices=DTYPES, default="float32")
    if kind == "repro" and dtype not in REPRO_DTYPES:
        raise InvalidSpec(
            f"repro profiles run {', '.join(REPRO_DTYPES)} only", join_field(path, "dtype")
        )
    profile = ExecutionProfile(
        kind=kind,
        torch_version=torch_version,
        dtype=dtype,
        intra_op_threads=threads,
        cpu_capability=capability,
        math_reproducible=get_bool(obj, "math_reproducible", path, default=True),
        deterministic=get_bool(obj, "deterministic", path, default=True),
        batch_blocks=_parse_batch_blocks(obj, path, kind),
    )
    if len(profile.label) > MAX_PROFILE_LABEL:  # unreachable with today's fields; kept as the rule
        raise InvalidSpec(
            f"its label must fit {MAX_PROFILE_LABEL} characters", join_field(path, "torch_version")
        )
    return profile


def _parse_batch_blocks(obj: dict, path: str, kind: str) -> int:
    """1 (fo1) unless a repro profile asks for a power of two; divisibility of the batch is
    checked by `parse_job_spec`, which sees both."""
    blocks = get_int(obj, "batch_blocks", path, low=1, high=MAX_BATCH_BLOCKS, default=1)
    if blocks != 1 and kind != "repro":
        raise InvalidSpec(
            "only repro profiles cut the batch into blocks", join_field(path, "batch_blocks")
        )
    if blocks & (blocks - 1):
        raise InvalidSpec("must be a power of two", join_field(path, "batch_blocks"))
    return blocks


def _parse_config(obj: dict, path: str) -> dict[str, Any]:
    """A model's or dataset's config: only value types and size here; its keys and ranges are
    checked by the model or dataset that reads it (`protocol.models`, `protocol.data`)."""
    field = join_field(path, "config")
    config = get_object(obj.get("config", {}), field)
    validate_json_tree(
        config,
        field,
        max_depth=MAX_CONFIG_DEPTH,
        max_values=MAX_CONFIG_VALUES,
        max_string=MAX_CONFIG_STRING,
    )
    return config


def _parse_model(obj: Any, path: str = "model") -> ModelSpec:
    obj = get_object(obj, path)
    validate_keys(obj, path, required={"name"}, optional={"config", "sha256", "weights"})
    name = get_choice(obj, "name", path, choices=(*MODELS, ONNX_MODEL))
    graph = _get_file_hash(obj, "sha256", path)
    if (graph is None) == (name == ONNX_MODEL):
        raise InvalidSpec(
            "an onnx model, and only an onnx model, names its graph file's SHA-256",
            join_field(path, "sha256"),
        )
    return ModelSpec(
        name=name,
        config=_parse_config(obj, path),
        sha256=graph,
        weights=_get_file_hash(obj, "weights", path),
    )


def _get_file_hash(obj: dict, key: str, path: str) -> str | None:
    """A job file's SHA-256 (64 hex digits, lower-cased), or None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or not is_hex(value):
        raise InvalidSpec("must be a file's SHA-256 as 64 hex digits", join_field(path, key))
    return value.lower()


def _parse_evaluation(obj: Any, path: str = "evaluation") -> EvaluationSpec | None:
    if obj is None:
        return None
    obj = get_object(obj, path)
    validate_keys(obj, path, required={"examples"})
    return EvaluationSpec(examples=get_int(obj, "examples", path, low=1, high=MAX_EVAL_EXAMPLES))


def _parse_dataset(obj: Any, path: str = "dataset") -> DatasetSpec:
    obj = get_object(obj, path)
    validate_keys(obj, path, required={"kind"}, optional={"seed", "config", "sha256"})
    kind = get_choice(obj, "kind", path, choices=DATASET_KINDS)
    sha256 = _get_file_hash(obj, "sha256", path)
    if (sha256 is None) == (kind == "safetensors"):
        raise InvalidSpec(
            "a safetensors dataset, and only a safetensors dataset, names its file's SHA-256",
            join_field(path, "sha256"),
        )
    return DatasetSpec(
        kind=kind,
        seed=get_int(obj, "seed", path, low=0, high=2**62, default=0),
        config=_parse_config(obj, path),
        sha256=sha256,
    )


def _parse_optimizer(obj: Any, path: str = "optimizer") -> OptimizerSpec:
    obj = get_object(obj, path)
    validate_keys(
        obj,
        path,
        required={"name", "lr"},
        optional={"momentum", "weight_decay", "beta1", "beta2", "eps"},
    )
    return OptimizerSpec(
        name=get_choice(obj, "name", path, choices=OPTIMIZERS),
        lr=get_float(obj, "lr", path, low=0.0, high=10.0, default=0.0),
        momentum=get_float(obj, "momentum", path, low=0.0, high=0.999999, default=0.9),
        weight_decay=get_float(obj, "weight_decay", path, low=0.0, high=1.0, default=0.0),
        beta1=get_float(obj, "beta1", path, low=0.0, high=0.999999, default=0.9),
        beta2=get_float(obj, "beta2", path, low=0.0, high=0.999999999, default=0.999),
        eps=get_float(obj, "eps", path, low=1e-12, high=1.0, default=1e-8),
    )


def _parse_schedule(obj: Any, path: str = "schedule") -> ScheduleSpec:
    obj = get_object(obj, path)
    validate_keys(obj, path, required={"name"}, optional={"warmup_steps"})
    return ScheduleSpec(
        name=get_choice(obj, "name", path, choices=SCHEDULES),
        warmup_steps=get_int(obj, "warmup_steps", path, low=0, high=MAX_STEPS, default=0),
    )


def parse_job_spec(obj: Any) -> JobSpec:
    """Validate a decoded JSON job spec; raises InvalidSpec naming the first bad field."""
    obj = get_object(obj, "")
    validate_keys(
        obj,
        "",
        required={
            "model",
            "dataset",
            "optimizer",
            "batch_size",
            "steps",
            "seed",
            "checkpoint_interval",
            "profile",
        },
        optional={"schedule", "version", "evaluation"},
    )
    if obj.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise InvalidSpec(f"only spec version {SPEC_VERSION} is understood", "version")
    steps = get_int(obj, "steps", "", low=1, high=MAX_STEPS)
    spec = JobSpec(
        model=_parse_model(obj["model"]),
        dataset=_parse_dataset(obj["dataset"]),
        optimizer=_parse_optimizer(obj["optimizer"]),
        schedule=_parse_schedule(obj.get("schedule", {"name": "constant"})),
        batch_size=get_int(obj, "batch_size", "", low=1, high=MAX_BATCH),
        steps=steps,
        seed=get_int(obj, "seed", "", low=0, high=2**62),
        checkpoint_interval=get_int(obj, "checkpoint_interval", "", low=1, high=steps),
        profile=parse_profile(obj["profile"]),
        evaluation=_parse_evaluation(obj.get("evaluation")),
    )
    if spec.schedule.warmup_steps > spec.steps:
        raise InvalidSpec("must not exceed steps", "schedule.warmup_steps")
    if spec.batch_size % spec.profile.batch_blocks:
        raise InvalidSpec("must divide batch_size", "profile.batch_blocks")
    _check_evaluation(spec)
    return spec


def _check_evaluation(spec: JobSpec) -> None:
    """Whole batches (a graph's batch is fixed), at most MAX_EVAL_BATCHES of them: the referee
    recomputes the evaluation with the final step, so its cost is bounded like a step's."""
    if spec.evaluation is None:
        return
    batches, rest = divmod(spec.evaluation.examples, spec.batch_size)
    if rest or batches > MAX_EVAL_BATCHES:
        raise InvalidSpec(
            f"must be a multiple of batch_size, at most {MAX_EVAL_BATCHES} batches",
            "evaluation.examples",
        )
    if spec.profile.batch_blocks != 1:
        raise InvalidSpec("an evaluated job runs one batch block", "profile.batch_blocks")


def spec_to_json(spec: JobSpec) -> dict[str, Any]:
    """The spec as JSON; `profile.batch_blocks` only when it is not 1, so every fo1 job keeps the
    encoding, and therefore the job id, it had before blocks existed."""
    obj = asdict(spec)
    if spec.profile.batch_blocks == 1:
        del obj["profile"]["batch_blocks"]
    for key in ("sha256", "weights"):  # fields newer than the built-in models' encoding
        if obj["model"][key] is None:
            del obj["model"][key]
    if spec.evaluation is None:
        del obj["evaluation"]
    return obj


def get_job_file_hashes(spec: JobSpec) -> list[str]:
    """Every file the job's training program reads, by SHA-256: the dataset file, the ONNX
    graph, the initial weights (each once, in that order). Whoever trains, replays or referees
    the job needs exactly these bytes; the coordinator serves them."""
    named = (spec.dataset.sha256, spec.model.sha256, spec.model.weights)
    return list(dict.fromkeys(h for h in named if h is not None))


def encode_job_spec(spec: JobSpec) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        spec_to_json(spec), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def compute_job_id(spec: JobSpec) -> JobId:
    return JobId(hashlib.sha256(b"veritrain/v1/job\x00" + encode_job_spec(spec)).digest())


def compute_checkpoint_steps(spec: JobSpec) -> list[StepIndex]:
    """Steps at which a checkpoint is committed: 0, interval, 2·interval, …, and always the last."""
    steps = list(range(0, spec.steps, spec.checkpoint_interval)) + [spec.steps]
    return [StepIndex(s) for s in steps]
