"""Training worker: runs training, replay and single steps in a subprocess pinned to a profile.

Thread counts and the CPU instruction set torch dispatches to can only be fixed *before* torch is
imported, so every computation whose bits matter runs here, in a fresh interpreter started with the
profile's environment. The worker then checks that the runtime really honours the profile (torch
version, threads, CPU capability) and refuses with `ProfileMismatch` if not.

Protocol: one JSON request on stdin; JSON lines on stdout — `progress` events, then one `result`
or `error`.
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from protocol import errors
from protocol.spec import ExecutionProfile

# ISA level → (ATEN_CPU_CAPABILITY, MKL_CBWR, ONEDNN_MAX_CPU_ISA): MKL and oneDNN dispatch on
# their own, so all three must agree for a pinned profile to mean the same code on every CPU.
ISA_SETTINGS = {
    "default": ("default", "COMPATIBLE", "SSE41"),
    "avx2": ("avx2", "AVX2,STRICT", "AVX2"),
    "avx512": ("avx512", "AVX512,STRICT", "AVX512_CORE"),
}
TORCH_CAPABILITY_NAMES = {"DEFAULT": "default", "AVX2": "avx2", "AVX512": "avx512"}
ERROR_TYPES: dict[str, type[errors.VeritrainError]] = {
    cls.code: cls
    for cls in (
        errors.InternalError,
        errors.InvalidInput,
        errors.InvalidSpec,
        errors.ProfileMismatch,
        errors.CheckpointCorrupt,
        errors.UnsteppableState,
    )
}


def get_runnable_profiles() -> list[str]:
    """What a daemon advertises by default: the example pinned profile, and the repro contracts
    (fo1, and fo2 for blocked batches) where their compiled kernels are built (found without
    importing torch)."""
    import dataclasses
    import importlib.util

    from protocol.presets import example_job_spec

    labels = [example_job_spec("mlp").profile.label]
    if importlib.util.find_spec("protocol.repro._fixed_order") is not None:
        repro = example_job_spec("mlp", profile="repro").profile
        labels += [repro.label, dataclasses.replace(repro, batch_blocks=2).label]
    return labels


def resolve_runtime(
    profile: ExecutionProfile, threads: int | None, capability: str | None
) -> tuple[int | None, str | None]:
    """Threads and ISA to run with: the profile's own when pinned, the caller's choice for repro."""
    if profile.kind == "pinned":
        if threads is not None or capability is not None:
            raise errors.InvalidInput(
                f"this job's profile pins {profile.intra_op_threads} thread(s) and {profile.cpu_capability}; "
                "--threads/--cpu-capability apply to repro profiles only",
                "threads",
            )
        return profile.intra_op_threads, profile.cpu_capability
    if capability is not None and capability not in ISA_SETTINGS:
        raise errors.InvalidInput(f"must be one of {', '.join(ISA_SETTINGS)}", "cpu_capability")
    if threads is not None and not 1 <= threads <= 256:
        raise errors.InvalidInput("must be between 1 and 256", "threads")
    return threads, capability


def compute_profile_environment(
    profile: ExecutionProfile, threads: int | None, capability: str | None
) -> dict[str, str]:
    env: dict[str, str] = {"VERITRAIN_PROFILE": json.dumps(profile.__dict__)}
    if threads is not None:
        env.update(
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            VERITRAIN_THREADS=str(threads),
        )
    if capability is not None:
        aten, mkl, onednn = ISA_SETTINGS[capability]
        env.update(ATEN_CPU_CAPABILITY=aten, VERITRAIN_CPU_CAPABILITY=capability)
        if profile.math_reproducible:
            env.update(MKL_CBWR=mkl, ONEDNN_MAX_CPU_ISA=onednn)
    return env


def run_worker(
    request: dict[str, Any],
    profile: ExecutionProfile,
    *,
    threads: int | None = None,
    capability: str | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run one request in a fresh worker process; re-raise its typed error in the caller."""
    threads, capability = resolve_runtime(profile, threads, capability)
    env = {**os.environ, **compute_profile_environment(profile, threads, capability)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sdk.worker"],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stderr_lines: list[str] = []
    drain = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
    drain.start()
    timer = threading.Timer(timeout, process.kill) if timeout else None
    if timer:
        timer.start()
    try:
        process.stdin.write(json.dumps(request))
        process.stdin.close()
        outcome = _read_events(process, on_progress)
        process.wait()
    finally:
        if timer:
            timer.cancel()
        if process.poll() is None:
            process.kill()
    drain.join(timeout=5)
    return _result_or_raise(outcome, process.returncode, stderr_lines)


def _read_events(process: subprocess.Popen, on_progress) -> dict[str, Any] | None:
    outcome = None
    for line in process.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # stray output from a library; the protocol lines are JSON
        if event.get("event") == "progress" and on_progress:
            on_progress(event)
        elif event.get("event") in ("result", "error"):
            outcome = event
    return outcome


def _read_line_outcome(process: subprocess.Popen) -> dict[str, Any] | None:
    """The next result or error line of a warm worker (None: it died)."""
    for line in process.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") in ("result", "error"):
            return event
    return None


def _result_or_raise(
    outcome: dict[str, Any] | None, returncode: int, stderr_lines: list[str]
) -> dict[str, Any]:
    if outcome is None:
        tail = "".join(stderr_lines[-5:]).strip() or f"exit status {returncode}"
        raise errors.InternalError(f"training worker died without a result: {tail}")
    if outcome["event"] == "result":
        return outcome["result"]
    cls = ERROR_TYPES.get(outcome.get("code"), errors.InternalError)
    message = outcome.get("message", "worker error")
    if issubclass(cls, errors.CheckpointCorrupt):  # UnsteppableState too: it decides a dispute
        raise cls(message, outcome.get("chunk_index"), outcome.get("tensor"))
    if issubclass(cls, errors.InvalidInput):
        raise cls(message, outcome.get("field"))
    raise cls(message)


# --- the child side ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """A worker orphaned by a killed daemon must not keep writing into its run directory."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: best effort only
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def apply_and_check_profile(profile: ExecutionProfile) -> None:
    import torch

    actual = torch.__version__.split("+")[0]
    if actual != profile.torch_version:
        raise errors.ProfileMismatch(
            f"profile needs torch {profile.torch_version}, this machine has {actual}"
        )
    threads = os.environ.get("VERITRAIN_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        if torch.get_num_threads() != int(threads):
            raise errors.ProfileMismatch(f"could not run with {threads} intra-op threads")
    wanted = os.environ.get("VERITRAIN_CPU_CAPABILITY")
    have = TORCH_CAPABILITY_NAMES.get(torch.backends.cpu.get_cpu_capability(), "unknown")
    if wanted and have != wanted:
        raise errors.ProfileMismatch(
            f"profile needs CPU capability {wanted}; this machine runs {have}"
        )
    torch.use_deterministic_algorithms(profile.deterministic)
    if profile.math_reproducible:
        torch.backends.mkldnn.enabled = False  # oneDNN picks kernels by CPU at run time


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _run_and_report(run: Callable[[], dict[str, Any]]) -> bool:
    """Run one request; its result or typed error goes to the parent as one JSON line."""
    try:
        _emit({"event": "result", "result": run()})
        return True
    except errors.VeritrainError as err:
        _emit(
            {
                "event": "error",
                "code": err.code,
                "message": getattr(err, "message", str(err)),
                "field": getattr(err, "field", None),
                "chunk_index": getattr(err, "chunk_index", None),
                "tensor": getattr(err, "tensor", None),
            }
        )
    except Exception as err:  # noqa: BLE001 — reported to the parent as our own bug
        import traceback

        traceback.print_exc()
        _emit(
            {"event": "error", "code": "internal_error", "message": f"{type(err).__name__}: {err}"}
        )
    return False


def _start_child(die_with_parent: bool = True) -> Callable[..., dict[str, Any]]:
    if die_with_parent:
        _die_with_parent()
    profile = ExecutionProfile(**json.loads(os.environ["VERITRAIN_PROFILE"]))
    apply_and_check_profile(profile)
    from sdk.tasks import run_task  # imports torch-heavy code only after the checks

    return run_task


def prepare_rank(rank: int) -> Callable[[dict[str, Any]], None]:
    """Run in each rank `sdk.parallel` spawns: the worker child's own setup (it inherited the
    profile's environment), and the progress callback — rank 0 reports, the others stay quiet."""
    _die_with_parent()
    apply_and_check_profile(ExecutionProfile(**json.loads(os.environ["VERITRAIN_PROFILE"])))
    if rank == 0:
        return lambda p: _emit({"event": "progress", **p})
    return lambda p: None


def _run_request(run_task, request: Any, progress) -> dict[str, Any]:
    """Training on more than one rank goes to `sdk.parallel`: ranks spawned here, or this
    process as one rank of a rendezvous (request["rank"], request["init_method"])."""
    if not isinstance(request, dict) or request.get("command") != "train":
        return run_task(request, progress)
    world_size = request.get("world_size", 1)
    if world_size == 1:
        return run_task(request, progress)
    from sdk import parallel  # torch.distributed: only data-parallel runs need it

    if request.get("behaviour"):
        raise errors.InvalidInput("behaviours run on one rank only", "world_size")
    if request.get("rank") is None:
        return parallel.train_local_ranks(request, world_size, prepare_rank)
    return parallel.train_rank(
        request, request["rank"], world_size, request["init_method"], progress
    )


def _child_main() -> int:
    holder: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        holder["run_task"] = _start_child()
        progress = lambda p: _emit({"event": "progress", **p})  # noqa: E731
        return _run_request(holder["run_task"], json.load(sys.stdin), progress)

    return 0 if _run_and_report(run) else 1


def _serve_main() -> int:
    """A warm worker (`sdk.warm_worker`): the profile is applied once, then one request per line.
    It ends when its stdin closes — also when the parent dies. (Not PDEATHSIG: that fires when
    the parent *thread* ends, and a server spawns from short-lived pool threads.)"""
    started: dict[str, Any] = {}
    if not _run_and_report(lambda: started.update(run_task=_start_child(False)) or {"ready": True}):
        return 1
    for line in sys.stdin:
        _run_and_report(lambda line=line: started["run_task"](json.loads(line), lambda p: None))
    return 0


if __name__ == "__main__":
    sys.exit(_serve_main() if "--serve" in sys.argv else _child_main())
