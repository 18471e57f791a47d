"""Data-parallel training over torch.distributed with the bits of one process (docs/parallel.md).

Each rank computes the fold of its aligned run of batch blocks (`protocol.parallel`); then, on
flat buffers laid out like the flattened gradients (`ShardedState`):

1. all-to-all: rank r receives slice r of every rank's flattened subtotal;
2. rank r folds those w slices pairwise in rank order (the top levels of the step's tree);
3. rank r applies the optimizer to its slice of the parameters and slots (elementwise: the bits
   of the one-process update);
4. all-gather: every rank receives every updated slice of the parameters.

That moves 2·(w−1)/w of the gradient bytes per rank, as a ring all-reduce does, but the sum's
order is fixed by the contract, not by the world size or the network. At each checkpoint the
slots are gathered, every rank shows it holds the same state root, and rank 0 writes.

Runs only inside `sdk.worker`'s child (profile pinned before torch was imported): local ranks are
spawned from there with `torch.multiprocessing`, whose children inherit that environment.
The exchange uses torch.distributed collectives on tensors of whatever device the state lives
on, so NCCL on CUDA tensors is the same code as gloo on CPU ones.
"""

import contextlib
import json
import multiprocessing.connection
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from protocol.errors import InternalError, InvalidInput, VeritrainError
from protocol.parallel import (
    check_world_size,
    compute_rank_blocks,
    flatten_terms,
    fold_pairwise,
    unflatten_terms,
)
from protocol.spec import compute_checkpoint_steps, parse_job_spec
from protocol.state import PARAM_PREFIX, STEP_KEY, TrainingState, compute_state_root, get_step
from protocol.training import (
    OPTIMIZER_SLOTS,
    TrainingProgram,
    check_runnable_spec,
    compute_learning_rate,
    get_param_names,
)
from sdk.state_files import write_atomically
from sdk.store import CheckpointStore, read_job_files

Progress = Callable[[dict[str, Any]], None]
LOSSES_FILE = "losses.json"  # as sdk.tasks' train writes it
DEFAULT_TIMEOUT_S = 300.0  # a collective waiting longer than this on a hung peer fails the step
SHUTDOWN_GRACE_S = 10.0
# A fork server imports torch once and forks every rank from it: no rank pays torch's import, and
# no rank is forked from a process whose OpenMP pool already ran (which can hang the child).
RANK_START_METHOD = (
    "forkserver"  # after one rank fails, how long the others get to fail on their own
)


def get_backend(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for everything else; the exchange is the same code."""
    return "nccl" if device.type == "cuda" else "gloo"


def get_state_device(state: TrainingState) -> torch.device:
    """Where the parameters live (the step counter is a CPU scalar on every device)."""
    return next(t.device for name, t in sorted(state.items()) if name != STEP_KEY)


def compute_local_init_method() -> str:
    """A TCP rendezvous on a free loopback port for ranks spawned on this host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


# --- the exchange --------------------------------------------------------------------------------


def reduce_scatter_in_order(flat: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """All-to-all into `out` (a buffer like `flat`, reused when given), then fold its w slices
    in place: its first slice becomes slice `rank` of the pairwise fold, in rank order, of every
    rank's `flat` (whose length is a multiple of the world size). Returns `out`."""
    out = torch.empty_like(flat) if out is None else out
    dist.all_to_all_single(out, flat)  # slice r of every rank's buffer, in rank order
    fold_pairwise(list(out.chunk(dist.get_world_size())), in_place=True)
    return out


def all_gather_slices(
    mine: torch.Tensor, out: torch.Tensor | None = None, staging: torch.Tensor | None = None
) -> torch.Tensor:
    """Every rank's slice, concatenated in rank order (into `out` when given). Pure data
    movement, so the collective chosen cannot change a bit: on gloo an all-to-all of the slice
    sent to every rank (through `staging`, a reusable buffer like `out`), because gloo's
    all-to-all moved these bytes in about a third of its all-gather's time here (18–21 vs
    54 ms, 21 MB per rank on loopback); elsewhere the backend's all-gather."""
    world = dist.get_world_size()
    out = mine.new_empty(mine.numel() * world) if out is None else out
    if dist.get_backend() != "gloo":
        dist.all_gather_single(out, mine)
        return out
    staging = torch.empty_like(out) if staging is None else staging
    staging.view(world, -1).copy_(mine.expand(world, -1))
    dist.all_to_all_single(out, staging)
    return out


@dataclass
class ShardedState:
    """A rank's training state as flat buffers, laid out as the flattened gradients (parameters
    in name order, then the loss, padded to a multiple of the world size). Every rank holds all
    parameters (it runs the forward); the optimizer slots are current only in the rank's own
    slice, which only it updates (ZeRO stage 1), until `gather_state` collects them."""

    program: TrainingProgram
    names: list[str]
    shapes: list[torch.Size]
    step: int
    params: torch.Tensor
    slots: list[torch.Tensor]
    # buffers reused every step: tens of MB each, which malloc would otherwise map (and the
    # kernel zero-fill page by page) anew every step
    _flat: torch.Tensor | None = None
    _received: torch.Tensor | None = None
    _spare: torch.Tensor | None = None

    @classmethod
    def from_state(cls, program: TrainingProgram, state: TrainingState) -> "ShardedState":
        names = get_param_names(state)
        slot_names = OPTIMIZER_SLOTS[program.spec.optimizer.name]
        world = dist.get_world_size()

        def flat(prefix: str) -> torch.Tensor:
            tensors = [state[prefix + n] for n in names]
            return flatten_terms([*tensors, tensors[0].new_zeros(())], world)  # + the loss slot

        params = flat(PARAM_PREFIX)
        slots = [flat(f"opt/{slot}/") for slot in slot_names]
        shapes = [state[PARAM_PREFIX + n].shape for n in names]
        return cls(program, names, shapes, get_step(state), params, slots)

    @property
    def param_count(self) -> int:
        return sum(shape.numel() for shape in self.shapes)

    def get_params_state(self) -> TrainingState:
        """Parameters (views, no copy) and the step: what the blocks' forward reads."""
        views = unflatten_terms(self.params, self.shapes)
        state = {PARAM_PREFIX + n: v for n, v in zip(self.names, views, strict=True)}
        return {**state, STEP_KEY: torch.tensor(self.step, dtype=torch.int64)}

    def process_step(self, blocks: range) -> float:
        """One step: fold own blocks, reduce-scatter, update own slice, all-gather parameters.
        Returns the step's loss."""
        program = self.program
        subtotal = program.compute_block_subtotal(self.get_params_state(), blocks)
        self._flat = flatten_terms(subtotal, dist.get_world_size(), self._flat)
        self._received = reduce_scatter_in_order(self._flat, self._received)
        mine = self._received[: self._flat.numel() // dist.get_world_size()]
        mine.mul_(1.0 / program.spec.profile.batch_blocks)
        start = dist.get_rank() * mine.numel()
        own = slice(start, max(start, min(start + mine.numel(), self.param_count)))
        count = own.stop - own.start
        if count:
            lr = compute_learning_rate(program.spec, self.step)
            param, slots = program.compute_update(
                self.params[own], mine[:count], [s[own] for s in self.slots], t=self.step + 1, lr=lr
            )
            for buffer, value in zip(self.slots, slots, strict=True):
                buffer[own] = value
            mine[:count] = param  # the slice now carries new parameters (and the loss after)
        self._spare = all_gather_slices(mine, self._spare, self._flat)  # _flat is free now
        self.params, self._spare = self._spare, self.params  # the old buffer is free now
        self.step += 1
        return float(self.params[self.param_count])

    def gather_state(self) -> TrainingState:
        """The full training state on every rank (slots all-gathered), as its own tensors."""
        size = self.params.numel() // dist.get_world_size()
        start = dist.get_rank() * size
        self.slots = [all_gather_slices(s[start : start + size]) for s in self.slots]
        state: TrainingState = {STEP_KEY: torch.tensor(self.step, dtype=torch.int64)}
        slot_names = OPTIMIZER_SLOTS[self.program.spec.optimizer.name]
        for prefix, flat in [(PARAM_PREFIX, self.params)] + [
            (f"opt/{slot}/", buffer) for slot, buffer in zip(slot_names, self.slots, strict=True)
        ]:
            for name, view in zip(self.names, unflatten_terms(flat, self.shapes), strict=True):
                state[prefix + name] = view.clone()
        return state


def broadcast_state(state: TrainingState | None, template: TrainingState) -> TrainingState:
    """Rank 0's state on every rank (resumes need no shared disk); `template` (an initial state)
    gives the names, shapes and dtypes the others receive into."""
    source = state if dist.get_rank() == 0 else template
    device = get_state_device(template)
    out: TrainingState = {}
    for name in sorted(template):
        tensor = source[name].to(device).contiguous().clone()
        dist.broadcast(tensor, src=0)
        out[name] = tensor.to(template[name].device)
    return out


def check_ranks_agree(state: TrainingState) -> None:
    """Every rank holds the same state root (a rank on a broken build must not go unnoticed)."""
    device = get_state_device(state)
    root = torch.tensor(list(compute_state_root(state)), dtype=torch.uint8, device=device)
    roots = torch.empty(dist.get_world_size() * root.numel(), dtype=torch.uint8, device=device)
    dist.all_gather_single(roots, root)
    distinct = {bytes(roots[i : i + root.numel()].tolist()) for i in range(0, roots.numel(), 32)}
    if len(distinct) != 1:
        raise InternalError(f"ranks disagree on the state root at step {get_step(state)}")


# --- one rank ------------------------------------------------------------------------------------


def train_rank(
    request: dict[str, Any], rank: int, world_size: int, init_method: str, progress: Progress
) -> dict[str, Any]:
    """Train as rank `rank` of `world_size`: rank 0 owns the run directory, all ranks step."""
    spec = parse_job_spec(request["spec"])
    check_world_size(spec, world_size)
    files = read_job_files(request.get("file_paths") or [])
    program = check_runnable_spec(spec, files)
    template = program.initial_state()
    timeout = timedelta(seconds=float(request.get("timeout_s") or DEFAULT_TIMEOUT_S))
    dist.init_process_group(
        get_backend(get_state_device(template)),
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    try:
        store = _open_store(request, spec, files) if rank == 0 else None
        with _peers_needed("receiving the start state from rank 0"):
            state = broadcast_state(_resume_point(store, template), template)
        resumed_from = get_step(state)
        _run_steps(program, store, state, rank, world_size, progress)
        if store is None:
            return {"rank": rank, "world_size": world_size, "resumed_from_step": resumed_from}
        return {**store.summary(), "resumed_from_step": resumed_from, "world_size": world_size}
    finally:
        dist.destroy_process_group()


def _open_store(request: dict[str, Any], spec, files: dict[str, bytes]) -> CheckpointStore:
    return CheckpointStore.open_or_create(Path(request["dir"]), spec, files)


def _resume_point(store: CheckpointStore | None, initial: TrainingState) -> TrainingState | None:
    if store is None:
        return None
    entries = store.entries()
    if not entries:
        store.write_checkpoint(initial)
        return initial
    return store.load_checkpoint(entries[-1].index)


def _run_steps(
    program: TrainingProgram,
    store: CheckpointStore | None,
    state: TrainingState,
    rank: int,
    world_size: int,
    progress: Progress,
) -> None:
    spec, blocks = program.spec, compute_rank_blocks(program.spec, world_size, rank)
    losses = _read_losses(store)
    checkpoint_steps = set(compute_checkpoint_steps(spec))
    sharded = ShardedState.from_state(program, state)
    while sharded.step < spec.steps:
        with _peers_needed(f"the exchange of step {sharded.step + 1}"):
            loss = sharded.process_step(blocks)
        step = sharded.step
        if step in checkpoint_steps:
            with _peers_needed(f"the state-root check of step {step}"):
                state = sharded.gather_state()
                check_ranks_agree(state)
        if store is None:
            continue
        losses[step] = loss
        if step in checkpoint_steps:
            store.write_checkpoint(state)
            write_atomically(store.directory / LOSSES_FILE, json.dumps(losses).encode())
        progress({"step": step, "steps": spec.steps, "loss": loss})


@contextlib.contextmanager
def _peers_needed(what: str):
    """A collective's failure (a peer died, hung past the timeout, or the network broke) as one
    line saying which collective; torch.distributed raises RuntimeErrors with long texts."""
    try:
        yield
    except RuntimeError as err:
        text = (str(err).strip().splitlines() or [""])[0]
        text = re.sub(r"^\[[^\]]*\] ", "", text)  # gloo's source location
        raise InternalError(f"{what} failed: {text[:160]}") from err


def _read_losses(store: CheckpointStore | None) -> dict[int, float]:
    path = store.directory / LOSSES_FILE if store else None
    if path is None or not path.exists():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


# --- local ranks ---------------------------------------------------------------------------------


def _rank_main(rank: int, prepare, request, world_size: int, init_method: str, failures) -> None:
    """A spawned rank: `prepare` (the worker's) pins the inherited profile and gives the progress
    callback; on failure the rank tells the launcher why in one line."""
    try:
        progress = prepare(rank)
        train_rank(request, rank, world_size, init_method, progress)
    except Exception as err:  # noqa: BLE001 — reported to the launcher as one line
        failures.put((rank, _describe_error(err)))
        sys.exit(1)


def _describe_error(err: Exception) -> str:
    if isinstance(err, VeritrainError):
        return str(err)
    first_line = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first_line}"


def train_local_ranks(
    request: dict[str, Any], world_size: int, prepare: Callable[[int], Progress]
) -> dict[str, Any]:
    """Spawn `world_size` ranks on this host and wait; a failed rank fails the run (the others
    fail their next collective and exit), and what was checkpointed stays for a resume."""
    spec = parse_job_spec(request["spec"])
    check_world_size(spec, world_size)
    resumed_from = _get_last_checkpoint_step(Path(request["dir"])) or 0
    context = torch_mp.get_context(RANK_START_METHOD)
    context.set_forkserver_preload(["torch", "torch.distributed", "protocol.training"])
    failures = context.SimpleQueue()
    processes = torch_mp.start_processes(
        _rank_main,
        args=(prepare, request, world_size, compute_local_init_method(), failures),
        nprocs=world_size,
        join=False,
        start_method=RANK_START_METHOD,
    ).processes
    _wait_for_ranks(processes, failures, request)
    store = CheckpointStore.open(Path(request["dir"]))
    return {**store.summary(), "resumed_from_step": resumed_from, "world_size": world_size}


def _wait_for_ranks(processes, failures, request: dict[str, Any]) -> None:
    alive = list(processes)
    while alive:
        multiprocessing.connection.wait([p.sentinel for p in alive])
        alive = [p for p in processes if p.exitcode is None]
        if any(p.exitcode not in (None, 0) for p in processes):
            stopped = _stop_survivors(processes)
            raise InternalError(_describe_failure(processes, stopped, failures, request))


def _stop_survivors(processes) -> set[int]:
    """Give the other ranks the grace period to fail on their own; kill the rest."""
    stopped, deadline = set(), time.monotonic() + SHUTDOWN_GRACE_S
    for rank, process in enumerate(processes):
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
            stopped.add(rank)
    return stopped


def _describe_failure(processes, stopped: set[int], failures, request: dict[str, Any]) -> str:
    """One line: which rank died how, what the others said, and where a resume starts."""
    said: dict[int, str] = {}
    while not failures.empty():
        rank, message = failures.get()
        said[rank] = message
    world = len(processes)
    parts = []
    for rank, process in enumerate(processes):
        if rank in stopped:
            parts.append(f"rank {rank} did not stop within {SHUTDOWN_GRACE_S:.0f} s and was killed")
        elif process.exitcode is not None and process.exitcode < 0:
            parts.append(f"rank {rank} was killed by {signal.Signals(-process.exitcode).name}")
        elif rank in said:
            parts.append(f"rank {rank}: {said[rank]}")
        elif process.exitcode:
            parts.append(f"rank {rank} exited with status {process.exitcode}")
    return f"data-parallel training on {world} ranks failed ({'; '.join(parts)}); {_resume_hint(request)}"


def _resume_hint(request: dict[str, Any]) -> str:
    step = _get_last_checkpoint_step(Path(request["dir"]))
    if step is None:
        return "nothing was checkpointed"
    return f"checkpoints up to step {step} are kept; run it again to resume"


def _get_last_checkpoint_step(directory: Path) -> int | None:
    try:
        entries = CheckpointStore.open(directory).entries()
    except InvalidInput:  # no run directory yet
        return None
    return int(entries[-1].step) if entries else None
