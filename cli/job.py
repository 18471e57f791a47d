"""`veritrain job …`: example specs, local training, local replay."""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cli.common import print_json, read_json_file, step_progress
from protocol.assurance import ASSURANCE_LEVELS, describe_sampling
from protocol.errors import InvalidInput
from protocol.parallel import check_world_size
from protocol.presets import example_job_spec_json, example_onnx_job_spec_json
from protocol.spec import (
    CPU_CAPABILITIES,
    MODELS,
    PROFILE_KINDS,
    compute_job_id,
    get_job_file_hashes,
    parse_job_spec,
)
from protocol.training import build_program
from protocol.wire import FINAL_JOB_STATES, DisputeStatus, JobState
from sdk.responses import DisputeView, JobView
from sdk.store import CheckpointStore, read_job_files
from sdk.transfers import compute_file_sha256
from sdk.worker import run_worker

EXIT_MISMATCH = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    job = subparsers.add_parser("job", help="job specs, local training and replay")
    commands = job.add_subparsers(dest="job_command", required=True, metavar="COMMAND")

    example = commands.add_parser("example", help="print a valid job spec (JSON)")
    source = example.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", choices=MODELS, help="a built-in model")
    source.add_argument(
        "--onnx", metavar="FILE", help="an ONNX graph from `veritrain model export`"
    )
    example.add_argument(
        "--dataset", metavar="FILE", help="with --onnx: the safetensors dataset to train on"
    )
    example.add_argument("--steps", type=int, default=None)
    example.add_argument(
        "--profile",
        choices=PROFILE_KINDS,
        default=None,
        help="default: repro (any threads and ISA, so any verifier can check any solver); an"
        " --onnx graph with a node that is not repro-safe: pinned",
    )
    example.add_argument(
        "--batch-blocks",
        type=int,
        default=None,
        help="repro only: cut the batch into this many row blocks (a power of two), so up to "
        "that many data-parallel ranks train it with the bits of one process (docs/parallel.md)",
    )
    example.set_defaults(func=cmd_example)

    run = commands.add_parser(
        "run-local", help="train a spec locally, writing checkpoints to --out"
    )
    run.add_argument("spec", help="job spec JSON file")
    run.add_argument(
        "--out",
        required=True,
        help="run directory (resumed if it exists; in a multi-host run only rank 0 writes it)",
    )
    _add_file_option(run)
    _add_runtime_options(run)
    _add_parallel_options(run)
    run.set_defaults(func=cmd_run_local)

    replay = commands.add_parser("replay", help="replay checkpoint I → I+1 and compare roots")
    replay.add_argument("dir", help="run directory written by run-local")
    replay.add_argument("--segment", type=int, required=True)
    _add_runtime_options(replay)
    replay.set_defaults(func=cmd_replay)

    _register_market_commands(commands)


def _register_market_commands(commands) -> None:
    submit = commands.add_parser("submit", help="post a spec with its bounty to a coordinator")
    submit.add_argument("spec", help="job spec JSON file")
    submit.add_argument("--bounty", type=int, required=True)
    submit.add_argument(
        "--min-stake", type=int, help="default: the least stake the stake rule allows"
    )
    submit.add_argument("--verifier-fee", type=int, help="default: the coordinator's default fee")
    submit.add_argument("--verifiers", type=int, default=1)
    submit.add_argument("--segments", type=int, default=1, help="segments each verifier replays")
    submit.add_argument("--bidding-s", type=float, default=60)
    submit.add_argument(
        "--assurance",
        choices=list(ASSURANCE_LEVELS),
        help="buy a built-in assurance level (sets --segments and --verifiers)",
    )
    submit.add_argument(
        "--detection", type=float, help="wanted detection probability of a one-step deviation"
    )
    _add_file_option(submit, " (uploaded first)")
    status = commands.add_parser("status", help="a job's state, solver, outcome and disputes")
    watch = commands.add_parser("watch", help="follow a job until it is settled or failed")
    watch.add_argument("--interval", type=float, default=1.0)
    download = commands.add_parser(
        "download",
        help="the trained model as safetensors, checked against the committed trajectory",
    )
    download.add_argument("--out", required=True)
    for parser, func in (
        (submit, cmd_submit),
        (status, cmd_status),
        (watch, cmd_watch),
        (download, cmd_download),
    ):
        if parser is not submit:
            parser.add_argument("job_id")
        parser.add_argument("--coordinator", required=True, help="coordinator URL")
        parser.add_argument("--key", required=parser is submit, help="key file")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=func)


def _add_file_option(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument(
        "--file",
        "--dataset",
        dest="files",
        action="append",
        default=[],
        metavar="PATH",
        help="a file the spec names by SHA-256: dataset, ONNX graph or initial weights; repeat"
        " for several" + note,
    )


def get_spec_files(spec, paths: list[str]) -> list[str]:
    """The given files as absolute paths, each one the spec names, none it names missing;
    InvalidInput (exit 2, one line) otherwise. Hashing them here is what lets a person pass
    files in any order without saying which is which."""
    by_hash = {}
    for path in paths:
        try:
            by_hash[compute_file_sha256(Path(path))] = str(Path(path).resolve())
        except OSError as err:
            raise InvalidInput(f"cannot read {path} ({err.strerror})", "--file") from err
    named = get_job_file_hashes(spec)
    unknown = [p for h, p in by_hash.items() if h not in named]
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a file the spec names by SHA-256", "--file")
    missing = [h for h in named if h not in by_hash]
    if missing:
        raise InvalidInput(f"the spec names a file with SHA-256 {missing[0]}; pass it", "--file")
    return [by_hash[h] for h in named]


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="intra-op threads (repro profiles only)")
    parser.add_argument(
        "--cpu-capability", choices=CPU_CAPABILITIES, help="ISA level (repro profiles only)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_parallel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--world-size",
        type=int,
        help="data-parallel ranks (default 1; a power of two dividing profile.batch_blocks); "
        "without --rendezvous they are spawned on this host",
    )
    parser.add_argument(
        "--rendezvous",
        help="torch.distributed init method shared by every host, e.g. tcp://host:port; this "
        "process is rank --rank (default: MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE when set)",
    )
    parser.add_argument("--rank", type=int, help="this process's rank in --rendezvous")
    parser.add_argument(
        "--rank-timeout",
        type=float,
        default=300.0,
        help="seconds a rank waits on its peers before the step fails",
    )


@dataclass(frozen=True)
class ParallelPlan:
    """How run-local trains: world size, and for a multi-host run this process's rank."""

    world_size: int = 1
    rank: int | None = None  # None: every rank on this host
    init_method: str | None = None

    def to_request(self, timeout_s: float) -> dict:
        request = {"world_size": self.world_size, "timeout_s": timeout_s}
        if self.rank is not None:
            request.update(rank=self.rank, init_method=self.init_method)
        return request


def get_parallel_plan(args: argparse.Namespace, environ: dict[str, str]) -> ParallelPlan:
    """From the flags, or from torchrun's variables when no --rendezvous is given; raises
    InvalidInput (one line, exit 2) for an incomplete or contradictory rendezvous."""
    if not args.rank_timeout > 0:
        raise InvalidInput("must be a positive number of seconds", "rank_timeout")
    torchrun = all(k in environ for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"))
    if args.rendezvous is None and args.rank is None and torchrun:
        world, rank = _env_int(environ, "WORLD_SIZE"), _env_int(environ, "RANK")
        if args.world_size not in (None, world):
            raise InvalidInput(
                f"WORLD_SIZE is {world} but --world-size is {args.world_size}", "world_size"
            )
        return _checked_plan(world, rank, "env://")
    if (args.rendezvous is None) != (args.rank is None):
        raise InvalidInput("--rendezvous and --rank go together (one process per rank)", "rank")
    world = 1 if args.world_size is None else args.world_size
    return _checked_plan(world, args.rank, args.rendezvous)


def _checked_plan(world: int, rank: int | None, init_method: str | None) -> ParallelPlan:
    if world < 1:
        raise InvalidInput("must be at least 1", "world_size")
    if rank is not None and not 0 <= rank < world:
        raise InvalidInput(f"must be between 0 and {world - 1}", "rank")
    return ParallelPlan(world, rank, init_method)


def _env_int(environ: dict[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as err:
        raise InvalidInput(f"{name}={environ[name]!r} is not an integer", "world_size") from err


def cmd_example(args: argparse.Namespace) -> int:
    if args.onnx:
        spec = get_onnx_example(args)
    else:
        spec = example_job_spec_json(args.model, args.steps, args.profile or "repro")
    if args.batch_blocks is not None:
        spec["profile"]["batch_blocks"] = args.batch_blocks
    parse_job_spec(spec)  # an example must always be valid (a bad --batch-blocks: one line)
    print(json.dumps(spec, indent=2))
    return 0


def get_onnx_example(args: argparse.Namespace) -> dict:
    """A spec for the user's graph: repro when every node is repro-safe (pinned otherwise, said
    on stderr), its batch and example shape from the graph."""
    from protocol.onnx_model import load_onnx_model

    graph_path = Path(args.onnx)
    graph = load_onnx_model(_read_file(graph_path, "--onnx"))
    profile = args.profile or ("pinned" if graph.unsafe_steps else "repro")
    if args.profile is None and graph.unsafe_steps:
        first = graph.unsafe_steps[0]
        print(
            f"pinned profile: node '{first.name}' ({first.op}) is not repro-safe", file=sys.stderr
        )
    return example_onnx_job_spec_json(
        compute_file_sha256(graph_path),
        graph.input.shape,
        graph.input.dtype == torch.int64,
        graph.output_shape[-1],
        steps=args.steps,
        profile=profile,
        dataset_sha256=compute_file_sha256(Path(args.dataset)) if args.dataset else None,
    )


def _read_file(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidInput(f"cannot read {path} ({err.strerror})", option) from err


def cmd_run_local(args: argparse.Namespace) -> int:
    spec_json = read_json_file(args.spec, "spec")
    spec = parse_job_spec(spec_json)
    file_paths = get_spec_files(spec, args.files)
    build_program(spec, read_job_files(file_paths))  # clear errors here
    plan = get_parallel_plan(args, dict(os.environ))
    check_world_size(spec, plan.world_size)
    request = {
        "command": "train",
        "spec": spec_json,
        "dir": str(Path(args.out).resolve()),
        "file_paths": file_paths,
        **plan.to_request(args.rank_timeout),
    }
    with step_progress(
        f"training {compute_job_id(spec).hex()[:12]}", not args.no_progress
    ) as on_progress:
        result = run_worker(
            request,
            spec.profile,
            threads=args.threads,
            capability=args.cpu_capability,
            on_progress=on_progress,
        )
    print_json(result)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    store = CheckpointStore.open(Path(args.dir))
    request = {"command": "replay", "dir": str(Path(args.dir).resolve()), "segment": args.segment}
    with step_progress(f"replaying segment {args.segment}", not args.no_progress) as on_progress:
        result = run_worker(
            request,
            store.spec.profile,
            threads=args.threads,
            capability=args.cpu_capability,
            on_progress=on_progress,
        )
    print_json(
        {k: result[k] for k in ("segment", "match", "expected", "computed", "from_step", "to_step")}
    )
    return 0 if result["match"] else EXIT_MISMATCH


# --- the market ------------------------------------------------------------------------------


def _market_client(args: argparse.Namespace):
    from sdk.client import CoordinatorClient
    from sdk.keys import load_key_file

    return CoordinatorClient(args.coordinator, load_key_file(Path(args.key)) if args.key else None)


def cmd_submit(args: argparse.Namespace) -> int:
    client = _market_client(args)
    spec_json = read_json_file(args.spec, "spec")
    for path in get_spec_files(parse_job_spec(spec_json), args.files):
        client.upload_dataset_file(Path(path))  # streamed from disk, resumable
    event = client.submit_job(
        spec_json,
        args.bounty,
        min_stake=args.min_stake,
        verifier_fee=args.verifier_fee,
        num_verifiers=args.verifiers,
        num_segments=args.segments,
        bidding_s=args.bidding_s,
        assurance=args.assurance,
        detection=args.detection,
    )
    if args.json:
        print_json(event)
        return 0
    job = client.get_job(event.job_id)
    plan = describe_sampling(job.num_checkpoints - 1, job.num_segments, job.num_verifiers)
    print(event.job_id)
    print(
        f"verification: {job.num_verifiers} verifier(s) × {job.num_segments} of "
        f"{plan.total_segments} segments = {plan.verification_fraction:.0%} of the training "
        f"compute; a one-step deviation survives with probability {plan.single_step_survival:.2f}",
        file=sys.stderr,
    )
    return 0


@dataclass(frozen=True)
class JobStatus:
    """A job and the disputes over its segments."""

    job: JobView
    disputes: tuple[DisputeView, ...]
    metrics: dict[str, float] = field(default_factory=dict)  # the final state's evaluation

    @property
    def metrics_verified(self) -> bool:
        """Settled: the final segment, which computes the metrics, was replayed and upheld."""
        return self.job.state is JobState.SETTLED

    @property
    def is_done(self) -> bool:
        """Final, and no dispute of it still open."""
        return self.job.state in FINAL_JOB_STATES and all(
            d.status is not DisputeStatus.OPEN for d in self.disputes
        )

    def to_json(self) -> dict:
        job = self.job
        return {
            "job_id": job.job_id,
            "state": job.state,
            "solver": job.solver,
            "price": job.price,
            "outcome": job.outcome,
            "trajectory_root": job.trajectory_root,
            "metrics": self.metrics,
            "metrics_verified": bool(self.metrics) and self.metrics_verified,
            "disputes": [
                {
                    "id": d.id,
                    "status": d.status,
                    "winner": d.winner,
                    "phase": d.phase,
                    "dispute_step": d.dispute_step,
                    "dispute_chunk": d.dispute_chunk,
                }
                for d in self.disputes
            ],
        }


def get_job_status(client, job_id: str) -> JobStatus:
    job = client.get_job(job_id)
    disputes = (
        [d for d in client.list_disputes(party=job.solver, status=None) if d.job_id == job_id]
        if job.solver
        else []
    )
    return JobStatus(job, tuple(disputes), get_final_metrics(client, job))


def get_final_metrics(client, job: JobView) -> dict[str, float]:
    """The metrics in the job's final checkpoint once the coordinator holds it; {} before, or
    for a job without an evaluation split."""
    from sdk.client import CoordinatorError

    if job.trajectory_root is None or not job.spec.get("evaluation"):
        return {}
    try:
        return client.read_checkpoint_metrics(job.job_id, job.num_checkpoints - 1)
    except CoordinatorError as err:
        if err.status == 404:
            return {}
        raise


def cmd_status(args: argparse.Namespace) -> int:
    status = get_job_status(_market_client(args), args.job_id)
    if args.json:
        print_json(status.to_json())
        return 0
    job = status.job
    print(
        f"{job.job_id[:16]}… {job.state} solver={(job.solver or '-')[:12]} outcome={job.outcome or '-'}"
    )
    if status.metrics:
        values = " ".join(f"{k}={v:.6g}" for k, v in sorted(status.metrics.items()))
        print(f"  metrics: {values} ({'verified' if status.metrics_verified else 'claimed'})")
    for d in status.disputes:
        print(
            f"  dispute {d.id}: {d.status} phase={d.phase} step={d.dispute_step} "
            f"chunk={d.dispute_chunk} winner={d.winner}"
        )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    import time

    client = _market_client(args)
    last = None
    while True:
        status = get_job_status(client, args.job_id)
        job = status.job
        line = (job.state, job.outcome, tuple((d.phase, d.winner) for d in status.disputes))
        if line != last:
            print_json(status.to_json()) if args.json else print(
                f"{job.state} outcome={job.outcome or '-'} disputes={list(line[2])}"
            )
            last = line
        if job.state in FINAL_JOB_STATES:
            return 0 if job.state is JobState.SETTLED else EXIT_MISMATCH
        time.sleep(args.interval)


def cmd_download(args: argparse.Namespace) -> int:
    """The final checkpoint, checked against its recorded state root and against the final-model
    root the solver signed in its commitment, then its model parameters written as safetensors."""
    from safetensors.torch import save_file

    from protocol.errors import CheckpointCorrupt
    from protocol.state import (
        BUFFER_PREFIX,
        METRIC_PREFIX,
        PARAM_PREFIX,
        compute_model_root,
        compute_state_root,
        get_model_params,
    )
    from sdk.state_files import read_state_file

    client = _market_client(args)
    job = client.get_job(args.job_id)
    if job.state is not JobState.SETTLED:
        raise CheckpointCorrupt(f"job is {job.state}: only a settled job's model is verified")
    last = job.num_checkpoints - 1
    # streamed to disk and resumable (a rerun continues an interrupted download), then decoded:
    # the roots below need the tensors; safetensors never unpickles
    staged = client.download_checkpoint_to(args.job_id, last, Path(args.out + ".checkpoint"))
    try:
        state = read_state_file(staged)
    finally:
        staged.unlink(missing_ok=True)
    info = client.get_checkpoint_info(args.job_id, last)
    if compute_state_root(state).hex() != info.state_root:
        raise CheckpointCorrupt("the downloaded checkpoint does not match its recorded state root")
    if compute_model_root(state).hex() != job.final_model_root:
        raise CheckpointCorrupt(
            "the model does not match the final-model root the solver committed to"
        )
    metrics = {
        k[len(METRIC_PREFIX) :]: float(v) for k, v in state.items() if k.startswith(METRIC_PREFIX)
    }
    model = {k[len(PARAM_PREFIX) :]: v for k, v in get_model_params(state).items()}
    model.update(
        (k[len(BUFFER_PREFIX) :], v) for k, v in state.items() if k.startswith(BUFFER_PREFIX)
    )
    metadata = {"veritrain.job_id": args.job_id, "veritrain.metrics": json.dumps(metrics)}
    save_file({k: v.contiguous() for k, v in model.items()}, args.out, metadata)
    result = {
        "job_id": args.job_id,
        "out": args.out,
        "final_model_root": job.final_model_root,
        "step": info.step,
        "metrics": metrics,  # in the state the roots above were checked against
    }
    values = "".join(f", {k} {v:.6g}" for k, v in sorted(metrics.items()))
    print_json(result) if args.json else print(
        f"wrote {args.out} (model root {job.final_model_root[:16]}…{values})"
    )
    return 0
