"""The deterministic training program: state(t+1) = step(state(t), job).

A state holds everything replay needs (parameters, optimizer slots, the step counter); data order,
dropout and initialisation derive from (seed, step), so any segment replays from its first
checkpoint alone. The program does no I/O: the caller pins the execution profile (threads, ISA)
before torch is imported — see `sdk.worker`.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from protocol.data import DTYPES, Dataset, load_dataset
from protocol.errors import InternalError, InvalidSpec
from protocol.job_files import JobFiles, get_job_file
from protocol.limits import check_dataset_size, check_state_size
from protocol.models import MODEL_REGISTRY, ModelDef, Params, compute_initial_params
from protocol.ops import NATIVE_OPS
from protocol.parallel import compute_block_rows, fold_pairwise
from protocol.rng import compute_batch_indices, make_generator
from protocol.spec import ONNX_MODEL, JobSpec
from protocol.state import (
    ALLOWED_DTYPES,
    BUFFER_PREFIX,
    METRIC_PREFIX,
    PARAM_PREFIX,
    STEP_KEY,
    StateLayout,
    TrainingState,
    compute_state_root,
    get_step,
)
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
    held_out: Dataset | None = None  # the evaluation split (spec.evaluation)
    initial_weights: dict[str, torch.Tensor] | None = None  # spec.model.weights, checked
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # the model's, at step 0

    def state_layout(self) -> StateLayout:
        """Every state's tensor names, dtype tags and shapes, as `initial_state()` has them (it
        holds every optimizer slot from step 0), from shapes alone: nothing is allocated."""
        tag = ALLOWED_DTYPES[DTYPES[self.spec.profile.dtype]]
        layout: StateLayout = {STEP_KEY: ("I64", ())}
        for name, shape in compute_param_shapes(self).items():
            layout[PARAM_PREFIX + name] = (tag, shape)
            for slot in OPTIMIZER_SLOTS[self.spec.optimizer.name]:
                layout[f"opt/{slot}/{name}"] = (tag, shape)
        for name, value in self.buffers.items():
            layout[BUFFER_PREFIX + name] = (ALLOWED_DTYPES[value.dtype], tuple(value.shape))
        for name in self.metric_names():
            layout[METRIC_PREFIX + name] = ("F64", ())
        return dict(sorted(layout.items()))

    def initial_state(self) -> TrainingState:
        dtype = DTYPES[self.spec.profile.dtype]
        params = self.initial_weights or compute_initial_params(
            self.model, self.config, seed=self.spec.seed, ops=self.ops, dtype=dtype
        )
        state: TrainingState = {STEP_KEY: torch.tensor(0, dtype=torch.int64)}
        for name, value in params.items():
            state[PARAM_PREFIX + name] = value.clone()
            for slot in OPTIMIZER_SLOTS[self.spec.optimizer.name]:
                state[f"opt/{slot}/{name}"] = torch.zeros_like(value)
        for name, value in self.buffers.items():
            state[BUFFER_PREFIX + name] = value.clone()
        for name in self.metric_names():  # zero until the final step computes them
            state[METRIC_PREFIX + name] = torch.tensor(0.0, dtype=torch.float64)
        return state

    def metric_names(self) -> list[str]:
        """The evaluation's committed metrics (none without a held-out split)."""
        if self.held_out is None:
            return []
        return (
            ["eval_loss"] if self.dataset.task == "regression" else ["eval_accuracy", "eval_loss"]
        )

    def compute_loss(
        self, params: Params, step: int, train: bool = True, block: int | None = None
    ) -> torch.Tensor:
        """The mean loss over the step's batch, or over one row block of it (fo2): a block draws
        its own dropout masks, so it computes the same bits on whichever rank holds it."""
        return self.compute_loss_and_buffers(params, self.buffers, step, train, block)[0]

    def compute_loss_and_buffers(
        self,
        params: Params,
        buffers: dict[str, torch.Tensor],
        step: int,
        train: bool = True,
        block: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and the buffers' values after the forward pass (unchanged without any)."""
        seed = self.spec.seed
        indices = compute_batch_indices(seed, step, self.dataset.size, self.spec.batch_size)
        if block is not None:
            indices = indices[compute_block_rows(self.spec, block)]
        inputs, targets = self.dataset.get_batch(indices)
        labels = () if block is None else (block,)
        dropout = (
            (lambda layer: make_generator(seed, "dropout", step, layer, *labels)) if train else None
        )
        output, buffers = self._forward(params, buffers, inputs, dropout, training=True)
        return self._loss(output, targets), buffers

    def _forward(self, params, buffers, inputs, dropout, training: bool):
        if self.buffers:
            model = self.model
            return model.forward_with_buffers(params, buffers, inputs, self.ops, dropout, training)
        return self.model.forward(params, self.config, inputs, self.ops, dropout), buffers

    def _loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.dataset.task == "regression":
            return self.ops.mse_loss(output, targets)
        return self.ops.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))

    def evaluate(self, state: TrainingState) -> dict[str, float]:
        """The model of `state` on the held-out split, in batches of `batch_size` in order, no
        dropout (running statistics for batch norms): mean loss over the batches (float64, summed
        in order) and top-1 accuracy over every target. A pure function of state and data."""
        if self.held_out is None:
            return {}
        params = {n: state[PARAM_PREFIX + n] for n in get_param_names(state)}
        buffers = {n: state[BUFFER_PREFIX + n] for n in self.buffers}
        batch, total, correct, targets_seen = self.spec.batch_size, 0.0, 0, 0
        with torch.no_grad():
            for first in range(0, self.held_out.size, batch):
                inputs, targets = self.held_out.get_batch(torch.arange(first, first + batch))
                output, _ = self._forward(params, buffers, inputs, None, training=False)
                total += float(self._loss(output, targets))
                if self.dataset.task != "regression":
                    predicted = output.reshape(-1, output.shape[-1]).argmax(dim=-1)
                    correct += int((predicted == targets.reshape(-1)).sum())
                    targets_seen += targets.numel()
        metrics = {"eval_loss": total / (self.held_out.size // batch)}
        if targets_seen:
            metrics["eval_accuracy"] = correct / targets_seen
        return metrics

    def step_with_metrics(self, state: TrainingState) -> tuple[TrainingState, dict[str, float]]:
        """One step. fo2 (batch_blocks > 1) folds every block here; `sdk.parallel` spreads the
        same blocks over ranks and reaches the same bits."""
        if self.spec.profile.batch_blocks > 1:
            subtotal = self.compute_block_subtotal(state, range(self.spec.profile.batch_blocks))
            return self.apply_block_total(state, subtotal)
        step = get_step(state)
        names = get_param_names(state)
        params = {n: state[PARAM_PREFIX + n].detach().requires_grad_(True) for n in names}
        buffers = {n: state[BUFFER_PREFIX + n] for n in self.buffers}
        loss, buffers = self.compute_loss_and_buffers(params, buffers, step)
        grads = self.ops.gradients(loss, [params[n] for n in names])
        new_state = self._apply_gradients(state, grads, buffers)
        return new_state, {"loss": float(loss.detach())}

    def compute_block_terms(self, state: TrainingState, block: int) -> list[torch.Tensor]:
        """Block `block`'s gradients (parameters in name order) followed by its mean loss."""
        step = get_step(state)
        names = get_param_names(state)
        params = {n: state[PARAM_PREFIX + n].detach().requires_grad_(True) for n in names}
        loss = self.compute_loss(params, step, block=block)
        grads = self.ops.gradients(loss, [params[n] for n in names])
        return [g.detach() for g in grads] + [loss.detach().reshape(())]

    def compute_block_subtotal(self, state: TrainingState, blocks: range) -> list[torch.Tensor]:
        """The fold of an aligned power-of-two run of blocks: one subtree of the step's tree.
        Blocks are computed one at a time and folded as soon as a pair is complete, so at most
        log2(len) + 1 gradient sets are alive at once."""
        pending: list[tuple[int, list[torch.Tensor]]] = []  # (subtree size, terms)
        for block in blocks:
            size, terms = 1, self.compute_block_terms(state, block)
            while pending and pending[-1][0] == size:
                _, left = pending.pop()
                terms = [fold_pairwise([a, b]) for a, b in zip(left, terms, strict=True)]
                size *= 2
            pending.append((size, terms))
        if len(pending) != 1:  # not a power of two: the caller broke the block rules
            raise InternalError(f"{len(blocks)} blocks do not form one subtree")
        return pending[0][1]

    def apply_block_total(
        self, state: TrainingState, total: list[torch.Tensor]
    ) -> tuple[TrainingState, dict[str, float]]:
        """Scale the fold of all n blocks by 1/n (exact: n is a power of two) and update."""
        scale = 1.0 / self.spec.profile.batch_blocks
        *grads, loss = [term * scale for term in total]
        return self._apply_gradients(state, grads), {"loss": float(loss)}

    def _apply_gradients(
        self,
        state: TrainingState,
        grads: list[torch.Tensor],
        buffers: dict[str, torch.Tensor] | None = None,
    ) -> TrainingState:
        step = get_step(state)
        new_state: TrainingState = {STEP_KEY: torch.tensor(step + 1, dtype=torch.int64)}
        lr = compute_learning_rate(self.spec, step)
        for name, grad in zip(get_param_names(state), grads, strict=True):
            self._apply_update(state, new_state, name, grad=grad, t=step + 1, lr=lr)
        for name, value in (buffers or {}).items():
            new_state[BUFFER_PREFIX + name] = value.detach()
        self._record_metrics(state, new_state)
        return new_state

    def _record_metrics(self, old: TrainingState, new: TrainingState) -> None:
        """Metrics carry over unchanged, and the final step evaluates the final model."""
        final = get_step(new) == self.spec.steps
        values = self.evaluate(new) if final else {}
        for name in self.metric_names():
            key = METRIC_PREFIX + name
            new[key] = (
                torch.tensor(_canonical(values[name]), dtype=torch.float64) if final else old[key]
            )

    def _apply_update(
        self, old: TrainingState, new: TrainingState, name: str, *, grad, t: int, lr: float
    ) -> None:
        slot_names = [f"opt/{slot}/{name}" for slot in OPTIMIZER_SLOTS[self.spec.optimizer.name]]
        param, slots = self.compute_update(
            old[PARAM_PREFIX + name], grad, [old[k] for k in slot_names], t=t, lr=lr
        )
        new.update(zip(slot_names, slots, strict=True))
        new[PARAM_PREFIX + name] = param.detach()

    def compute_update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        slots: list[torch.Tensor],
        *,
        t: int,
        lr: float,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The optimizer's rule: new parameter and slots (OPTIMIZER_SLOTS order). Elementwise, so
        any slice of a flat buffer gets the bits its elements get inside their own tensors —
        what lets data-parallel ranks each update one slice (`sdk.parallel`)."""
        opt = self.spec.optimizer
        with torch.no_grad():
            if opt.name == "sgd":
                param, buf = self.ops.sgd_update(
                    param, grad, slots[0], lr, opt.momentum, opt.weight_decay
                )
                return param, [buf]
            param, m, v = self.ops.adamw_update(
                param, grad, *slots, t, lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay
            )
            return param, [m, v]

    def step(self, state: TrainingState) -> TrainingState:
        return self.step_with_metrics(state)[0]

    def run(self, state: TrainingState, until_step: int) -> TrainingState:
        while get_step(state) < until_step:
            state = self.step(state)
        return state


def _canonical(value: float) -> float:
    """A diverged model's NaN as one bit pattern: hardware NaN payloads differ (docs/repro.md)."""
    return math.nan if math.isnan(value) else value


def get_param_names(state: TrainingState) -> list[str]:
    """Parameter names in the fixed order gradients travel in."""
    return sorted(k[len(PARAM_PREFIX) :] for k in state if k.startswith(PARAM_PREFIX))


def build_program(spec: JobSpec, files: JobFiles | None = None) -> TrainingProgram:
    """Validate the spec against its data and model; raises InvalidSpec naming the field.
    `files` holds the job's files by SHA-256 (`protocol.spec.get_job_file_hashes`)."""
    dataset_blob = (
        get_job_file(files, spec.dataset.sha256, "dataset.sha256") if spec.dataset.sha256 else None
    )
    dataset, held_out = split_dataset(spec, load_dataset(spec, dataset_blob))
    model = load_model(spec, files)
    config = model.resolve_config(dict(spec.model.config), dataset)
    graph_batch = config.get("batch_size")  # a graph's batch dimension is fixed
    if graph_batch is not None and graph_batch != spec.batch_size // spec.profile.batch_blocks:
        raise InvalidSpec(
            f"the graph's batch dimension is {config['batch_size']}: batch_size (per batch block)"
            " must equal it",
            "batch_size",
        )
    program = TrainingProgram(
        spec,
        dataset,
        model,
        config,
        get_ops(spec),
        held_out,
        buffers=dict(getattr(model, "buffers", {})),
    )
    if program.buffers and spec.profile.batch_blocks != 1:
        raise InvalidSpec(
            "batch-norm statistics are per batch: such a model runs one batch block",
            "profile.batch_blocks",
        )
    if spec.model.weights:
        program.initial_weights = load_initial_weights(
            program, get_job_file(files, spec.model.weights, "model.weights")
        )
    return program


def load_model(spec: JobSpec, files: JobFiles | None) -> ModelDef:
    """A built-in model, or the job's ONNX graph (checked repro-safe for repro profiles)."""
    if spec.model.name != ONNX_MODEL:
        model = MODEL_REGISTRY.get(spec.model.name)
        if model is None:
            raise InvalidSpec("unknown model", "model.name")
        return model
    from protocol.onnx_model import check_repro_safe, load_onnx_model  # onnx: ONNX jobs only

    if spec.profile.dtype != "float32":
        raise InvalidSpec("an ONNX graph trains in float32", "profile.dtype")
    model = load_onnx_model(get_job_file(files, spec.model.sha256, "model.sha256"))
    if spec.profile.kind == "repro":
        check_repro_safe(model)
    return model


def split_dataset(spec: JobSpec, dataset: Dataset) -> tuple[Dataset, Dataset | None]:
    """Training examples and the held-out evaluation split (the dataset's last examples)."""
    if spec.evaluation is None:
        return dataset, None
    held = spec.evaluation.examples
    if dataset.size - held <= 0:
        raise InvalidSpec(f"the dataset has only {dataset.size} examples", "evaluation.examples")
    train, held_out = dataset.split(dataset.size - held)
    if train.size < 1:
        raise InvalidSpec("holding these out leaves nothing to train on", "evaluation.examples")
    return train, held_out


def load_initial_weights(program: TrainingProgram, blob: bytes) -> dict[str, torch.Tensor]:
    """A safetensors file of every parameter (and optionally buffer) by name, each of its exact
    shape and dtype: checkpoint 0 is then exactly these values with fresh optimizer state."""
    from protocol.weights import read_weights_file

    shapes = compute_param_shapes(program)
    dtype = DTYPES[program.spec.profile.dtype]
    weights, buffers = read_weights_file(blob, shapes, dtype, program.buffers)
    program.buffers.update(buffers)
    return weights


def compute_param_shapes(program: TrainingProgram) -> dict[str, tuple[int, ...]]:
    """The model's parameter shapes (meta tensors: nothing is allocated)."""

    def init(_name: str, shape: tuple[int, ...], _bound: float | None) -> torch.Tensor:
        return torch.empty(shape, device="meta")

    params = program.model.init_params(program.config, init)
    return {name: tuple(t.shape) for name, t in params.items()}


def compute_parameter_count(program: TrainingProgram) -> int:
    return sum(math.prod(shape) for shape in compute_param_shapes(program).values())


def check_runnable_spec(spec: JobSpec, files: JobFiles | None = None) -> TrainingProgram:
    """The one validator for "can this job be trained": the program built as the worker builds it,
    within the size limits of `protocol.limits`. Run by the coordinator at submission and by the
    daemons before they bid or replay; raises InvalidSpec naming the field."""
    check_dataset_size(spec)
    program = build_program(spec, files)
    slots = len(OPTIMIZER_SLOTS[spec.optimizer.name])
    check_state_size(spec, compute_parameter_count(program), slots)
    return program


def compute_initial_state_root(spec: JobSpec, files: JobFiles | None = None) -> Root:
    """The state root of checkpoint 0 of every honest trajectory of `spec`: its seeded
    initialisation (or given weights) with zeroed optimizer state, no training step. The
    coordinator checks a solver's checkpoint 0 against it before any verification is assigned."""
    return compute_state_root(check_runnable_spec(spec, files).initial_state())
