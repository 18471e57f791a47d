"""The deterministic training program: state(t+1) = step(state(t), job).

A state holds everything replay needs (parameters, optimizer slots, the step counter); data order,
dropout and initialisation derive from (seed, step), so any segment replays from its first
checkpoint alone. The program does no I/O: the caller pins the execution profile (threads, ISA)
before torch is imported — see `sdk.worker`.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch

from protocol.data import DTYPES, Dataset, load_dataset
from protocol.errors import InvalidSpec
from protocol.limits import check_dataset_size, check_state_size
from protocol.models import MODEL_REGISTRY, ModelDef, Params, compute_initial_params
from protocol.ops import NATIVE_OPS
from protocol.rng import compute_batch_indices, make_generator
from protocol.spec import JobSpec
from protocol.state import PARAM_PREFIX, STEP_KEY, TrainingState, compute_state_root, get_step
from protocol.types import Root

OPTIMIZER_SLOTS = {"sgd": ("momentum",), "adamw": ("exp_avg", "exp_avg_sq")}


def get_ops(spec: JobSpec):
    """Native torch ops for pinned profiles; fixed-order kernels for the repro profile."""
    if spec.profile.kind == "repro":
        from protocol.repro.ops import REPRO_OPS  # imported lazily: only repro jobs need it

        return REPRO_OPS
    return NATIVE_OPS


def compute_learning_rate(spec: JobSpec, step: int) -> float:
    base = spec.optimizer.lr
    if spec.schedule.name == "constant":
        return base
    warmup = spec.schedule.warmup_steps
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.steps - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainingProgram:
    spec: JobSpec
    dataset: Dataset
    model: ModelDef
    config: dict[str, Any]
    ops: Any

    def initial_state(self) -> TrainingState:
        dtype = DTYPES[self.spec.profile.dtype]
        params = compute_initial_params(
            self.model, self.config, seed=self.spec.seed, ops=self.ops, dtype=dtype
        )
        state: TrainingState = {STEP_KEY: torch.tensor(0, dtype=torch.int64)}
        for name, value in params.items():
            state[PARAM_PREFIX + name] = value
            for slot in OPTIMIZER_SLOTS[self.spec.optimizer.name]:
                state[f"opt/{slot}/{name}"] = torch.zeros_like(value)
        return state

    def compute_loss(self, params: Params, step: int, train: bool = True) -> torch.Tensor:
        seed = self.spec.seed
        indices = compute_batch_indices(seed, step, self.dataset.size, self.spec.batch_size)
        inputs, targets = self.dataset.get_batch(indices)
        dropout = (lambda layer: make_generator(seed, "dropout", step, layer)) if train else None
        output = self.model.forward(params, self.config, inputs, self.ops, dropout)
        if self.dataset.task == "regression":
            return self.ops.mse_loss(output, targets)
        return self.ops.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))

    def step_with_metrics(self, state: TrainingState) -> tuple[TrainingState, dict[str, float]]:
        step = get_step(state)
        names = sorted(k[len(PARAM_PREFIX) :] for k in state if k.startswith(PARAM_PREFIX))
        params = {n: state[PARAM_PREFIX + n].detach().requires_grad_(True) for n in names}
        loss = self.compute_loss(params, step)
        grads = self.ops.gradients(loss, [params[n] for n in names])
        new_state: TrainingState = {STEP_KEY: torch.tensor(step + 1, dtype=torch.int64)}
        lr = compute_learning_rate(self.spec, step)
        for name, grad in zip(names, grads, strict=True):
            self._apply_update(state, new_state, name, grad=grad, t=step + 1, lr=lr)
        return new_state, {"loss": float(loss.detach())}

    def _apply_update(
        self, old: TrainingState, new: TrainingState, name: str, *, grad, t: int, lr: float
    ) -> None:
        opt, param = self.spec.optimizer, old[PARAM_PREFIX + name]
        with torch.no_grad():
            if opt.name == "sgd":
                param, buf = self.ops.sgd_update(
                    param, grad, old[f"opt/momentum/{name}"], lr, opt.momentum, opt.weight_decay
                )
                new[f"opt/momentum/{name}"] = buf
            else:
                param, m, v = self.ops.adamw_update(
                    param,
                    grad,
                    old[f"opt/exp_avg/{name}"],
                    old[f"opt/exp_avg_sq/{name}"],
                    t,
                    lr,
                    opt.beta1,
                    opt.beta2,
                    opt.eps,
                    opt.weight_decay,
                )
                new[f"opt/exp_avg/{name}"], new[f"opt/exp_avg_sq/{name}"] = m, v
        new[PARAM_PREFIX + name] = param.detach()

    def step(self, state: TrainingState) -> TrainingState:
        return self.step_with_metrics(state)[0]

    def run(self, state: TrainingState, until_step: int) -> TrainingState:
        while get_step(state) < until_step:
            state = self.step(state)
        return state


def build_program(spec: JobSpec, dataset_blob: bytes | None = None) -> TrainingProgram:
    """Validate the spec against its data and model; raises InvalidSpec naming the field."""
    dataset = load_dataset(spec, dataset_blob)
    model = MODEL_REGISTRY.get(spec.model.name)
    if model is None:
        raise InvalidSpec("unknown model", "model.name")
    config = model.resolve_config(dict(spec.model.config), dataset)
    return TrainingProgram(spec, dataset, model, config, get_ops(spec))


def compute_parameter_count(program: TrainingProgram) -> int:
    """The model's parameter count from its shapes alone (meta tensors: nothing is allocated)."""

    def init(_name: str, shape: tuple[int, ...], _bound: float | None) -> torch.Tensor:
        return torch.empty(shape, device="meta")

    return sum(t.numel() for t in program.model.init_params(program.config, init).values())


def check_runnable_spec(spec: JobSpec, dataset_blob: bytes | None = None) -> TrainingProgram:
    """The one validator for "can this job be trained": the program built as the worker builds it,
    within the size limits of `protocol.limits`. Run by the coordinator at submission and by the
    daemons before they bid or replay; raises InvalidSpec naming the field."""
    check_dataset_size(spec)
    program = build_program(spec, dataset_blob)
    slots = len(OPTIMIZER_SLOTS[spec.optimizer.name])
    check_state_size(spec, compute_parameter_count(program), slots)
    return program


def compute_initial_state_root(spec: JobSpec, dataset_blob: bytes | None = None) -> Root:
    """The state root of checkpoint 0 of every honest trajectory of `spec`: its seeded
    initialisation with zeroed optimizer state, no training step. The coordinator checks a
    solver's checkpoint 0 against it before any verification is assigned."""
    return compute_state_root(check_runnable_spec(spec, dataset_blob).initial_state())
