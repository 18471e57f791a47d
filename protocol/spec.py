"""Job specs and execution profiles: typed, validated, canonically encoded.

The job id is SHA-256 over the canonical JSON of the spec, so two parties that agree on a spec
agree on its id byte for byte.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.errors import InvalidSpec
from protocol.types import JobId, StepIndex

SPEC_VERSION = 1
TORCH_VERSION = "2.13.0"
PROFILE_KINDS = ("pinned", "repro")
CPU_CAPABILITIES = ("default", "avx2", "avx512")
DTYPES = ("float32", "float64")
# The repro profile's arithmetic contract (protocol/repro/reference.py); part of its label, so a
# change of contract can never be matched against trajectories computed under the old one.
REPRO_CONTRACT = "fo1"
REPRO_DTYPES = ("float32",)
MODELS = ("mlp", "cnn", "gpt-tiny")
DATASET_KINDS = ("synthetic-classification", "synthetic-regression", "text", "safetensors")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536


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

    @property
    def label(self) -> str:
        """What solvers and verifiers advertise and the coordinator matches on."""
        if self.kind == "repro":
            return f"repro:{REPRO_CONTRACT}:torch-{self.torch_version}:{self.dtype}"
        return f"{self.kind}:torch-{self.torch_version}:{self.dtype}:t{self.intra_op_threads}:{self.cpu_capability}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: dict[str, Any] = field(default_factory=dict)


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


# --- validation helpers ------------------------------------------------------------------------


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidSpec("must be a JSON object", path)
    return value


def _check_keys(obj: dict[str, Any], path: str, required: set[str], optional: set[str]) -> None:
    unknown = set(obj) - required - optional
    if unknown:
        raise InvalidSpec("unknown field", _join(path, sorted(unknown)[0]))
    missing = required - set(obj)
    if missing:
        raise InvalidSpec("missing required field", _join(path, sorted(missing)[0]))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _int(obj: dict, key: str, path: str, low: int, high: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec("must be an integer", _join(path, key))
    if not low <= value <= high:
        raise InvalidSpec(f"must be between {low} and {high}", _join(path, key))
    return value


def _float(obj: dict, key: str, path: str, low: float, high: float, default: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec("must be a number", _join(path, key))
    if not low <= value <= high:  # also rejects NaN
        raise InvalidSpec(f"must be between {low} and {high}", _join(path, key))
    return float(value)


def _choice(obj: dict, key: str, path: str, choices: tuple, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value not in choices:
        raise InvalidSpec(f"must be one of {', '.join(map(str, choices))}", _join(path, key))
    return value


def _bool(obj: dict, key: str, path: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise InvalidSpec("must be true or false", _join(path, key))
    return value


def _config(obj: dict, path: str) -> dict[str, Any]:
    config = _object(obj.get("config", {}), _join(path, "config"))
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int | float | list):
            raise InvalidSpec("config values must be numbers or lists of integers", _join(_join(path, "config"), key))
    return config


# --- parsing -----------------------------------------------------------------------------------


def parse_profile(obj: Any, path: str = "profile") -> ExecutionProfile:
    obj = _object(obj, path)
    keys = {"kind", "torch_version", "dtype", "intra_op_threads", "cpu_capability",
            "math_reproducible", "deterministic"}
    _check_keys(obj, path, {"kind"}, keys - {"kind"})
    kind = _choice(obj, "kind", path, PROFILE_KINDS)
    torch_version = obj.get("torch_version", TORCH_VERSION)
    if not isinstance(torch_version, str) or not torch_version:
        raise InvalidSpec("must be a version string", _join(path, "torch_version"))
    if kind == "repro":
        for pinned_only in ("intra_op_threads", "cpu_capability"):
            if obj.get(pinned_only) is not None:
                raise InvalidSpec("repro profiles run on any threads and ISA; omit it", _join(path, pinned_only))
        threads, capability = None, None
    else:
        threads = _int(obj, "intra_op_threads", path, 1, 256, default=1)
        capability = _choice(obj, "cpu_capability", path, CPU_CAPABILITIES, default="avx2")
    dtype = _choice(obj, "dtype", path, DTYPES, default="float32")
    if kind == "repro" and dtype not in REPRO_DTYPES:
        raise InvalidSpec(f"repro profiles run {', '.join(REPRO_DTYPES)} only", _join(path, "dtype"))
    return ExecutionProfile(
        kind=kind,
        torch_version=torch_version,
        dtype=dtype,
        intra_op_threads=threads,
        cpu_capability=capability,
        math_reproducible=_bool(obj, "math_reproducible", path, True),
        deterministic=_bool(obj, "deterministic", path, True),
    )


def _parse_model(obj: Any, path: str = "model") -> ModelSpec:
    obj = _object(obj, path)
    _check_keys(obj, path, {"name"}, {"config"})
    return ModelSpec(name=_choice(obj, "name", path, MODELS), config=_config(obj, path))


def _parse_dataset(obj: Any, path: str = "dataset") -> DatasetSpec:
    obj = _object(obj, path)
    _check_keys(obj, path, {"kind"}, {"seed", "config", "sha256"})
    kind = _choice(obj, "kind", path, DATASET_KINDS)
    sha256 = obj.get("sha256")
    if kind == "safetensors":
        if not isinstance(sha256, str) or len(sha256) != 64 or not _is_hex(sha256):
            raise InvalidSpec("must be the dataset file's SHA-256 as 64 hex digits", _join(path, "sha256"))
    elif sha256 is not None:
        raise InvalidSpec("only safetensors datasets are referenced by hash", _join(path, "sha256"))
    return DatasetSpec(kind=kind, seed=_int(obj, "seed", path, 0, 2**62, default=0),
                       config=_config(obj, path), sha256=sha256.lower() if sha256 else None)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _parse_optimizer(obj: Any, path: str = "optimizer") -> OptimizerSpec:
    obj = _object(obj, path)
    _check_keys(obj, path, {"name", "lr"}, {"momentum", "weight_decay", "beta1", "beta2", "eps"})
    return OptimizerSpec(
        name=_choice(obj, "name", path, OPTIMIZERS),
        lr=_float(obj, "lr", path, 0.0, 10.0, 0.0),
        momentum=_float(obj, "momentum", path, 0.0, 0.999999, 0.9),
        weight_decay=_float(obj, "weight_decay", path, 0.0, 1.0, 0.0),
        beta1=_float(obj, "beta1", path, 0.0, 0.999999, 0.9),
        beta2=_float(obj, "beta2", path, 0.0, 0.999999999, 0.999),
        eps=_float(obj, "eps", path, 1e-12, 1.0, 1e-8),
    )


def _parse_schedule(obj: Any, path: str = "schedule") -> ScheduleSpec:
    obj = _object(obj, path)
    _check_keys(obj, path, {"name"}, {"warmup_steps"})
    return ScheduleSpec(name=_choice(obj, "name", path, SCHEDULES),
                        warmup_steps=_int(obj, "warmup_steps", path, 0, MAX_STEPS, default=0))


def parse_job_spec(obj: Any) -> JobSpec:
    """Validate a decoded JSON job spec; raises InvalidSpec naming the first bad field."""
    obj = _object(obj, "")
    required = {"model", "dataset", "optimizer", "batch_size", "steps", "seed",
                "checkpoint_interval", "profile"}
    _check_keys(obj, "", required, {"schedule", "version"})
    if obj.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise InvalidSpec(f"only spec version {SPEC_VERSION} is understood", "version")
    steps = _int(obj, "steps", "", 1, MAX_STEPS)
    spec = JobSpec(
        model=_parse_model(obj["model"]),
        dataset=_parse_dataset(obj["dataset"]),
        optimizer=_parse_optimizer(obj["optimizer"]),
        schedule=_parse_schedule(obj.get("schedule", {"name": "constant"})),
        batch_size=_int(obj, "batch_size", "", 1, MAX_BATCH),
        steps=steps,
        seed=_int(obj, "seed", "", 0, 2**62),
        checkpoint_interval=_int(obj, "checkpoint_interval", "", 1, steps),
        profile=parse_profile(obj["profile"]),
    )
    if spec.schedule.warmup_steps > spec.steps:
        raise InvalidSpec("must not exceed steps", "schedule.warmup_steps")
    return spec


def spec_to_json(spec: JobSpec) -> dict[str, Any]:
    return asdict(spec)


def encode_job_spec(spec: JobSpec) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(spec_to_json(spec), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_job_id(spec: JobSpec) -> JobId:
    return JobId(hashlib.sha256(b"veritrain/v1/job\x00" + encode_job_spec(spec)).digest())


def compute_checkpoint_steps(spec: JobSpec) -> list[StepIndex]:
    """Steps at which a checkpoint is committed: 0, interval, 2·interval, …, and always the last."""
    steps = list(range(0, spec.steps, spec.checkpoint_interval)) + [spec.steps]
    return [StepIndex(s) for s in steps]
