"""`veritrain job …`: example specs, local training, local replay."""

import argparse
import json
from pathlib import Path

from cli.common import print_json, read_json_file, step_progress
from protocol.presets import example_job_spec_json
from protocol.spec import CPU_CAPABILITIES, MODELS, PROFILE_KINDS, compute_job_id, parse_job_spec
from protocol.training import build_program
from sdk.store import CheckpointStore
from sdk.worker import run_worker

EXIT_MISMATCH = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    job = subparsers.add_parser("job", help="job specs, local training and replay")
    commands = job.add_subparsers(dest="job_command", required=True, metavar="COMMAND")

    example = commands.add_parser("example", help="print a valid job spec (JSON)")
    example.add_argument("--model", required=True, choices=MODELS)
    example.add_argument("--steps", type=int, default=None)
    example.add_argument("--profile", choices=PROFILE_KINDS, default="pinned")
    example.set_defaults(func=cmd_example)

    run = commands.add_parser("run-local", help="train a spec locally, writing checkpoints to --out")
    run.add_argument("spec", help="job spec JSON file")
    run.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    run.add_argument("--dataset", help="safetensors dataset file for 'safetensors' datasets")
    _add_runtime_options(run)
    run.set_defaults(func=cmd_run_local)

    replay = commands.add_parser("replay", help="replay checkpoint I → I+1 and compare roots")
    replay.add_argument("dir", help="run directory written by run-local")
    replay.add_argument("--segment", type=int, required=True)
    _add_runtime_options(replay)
    replay.set_defaults(func=cmd_replay)


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="intra-op threads (repro profiles only)")
    parser.add_argument("--cpu-capability", choices=CPU_CAPABILITIES, help="ISA level (repro profiles only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_example(args: argparse.Namespace) -> int:
    spec = example_job_spec_json(args.model, args.steps, args.profile)
    parse_job_spec(spec)  # an example must always be valid
    print(json.dumps(spec, indent=2))
    return 0


def cmd_run_local(args: argparse.Namespace) -> int:
    spec_json = read_json_file(args.spec, "spec")
    spec = parse_job_spec(spec_json)
    dataset_path = str(Path(args.dataset).resolve()) if args.dataset else None
    build_program(spec, Path(dataset_path).read_bytes() if dataset_path else None)  # clear errors here
    request = {"command": "train", "spec": spec_json, "dir": str(Path(args.out).resolve()),
               "dataset_path": dataset_path}
    with step_progress(f"training {compute_job_id(spec).hex()[:12]}", not args.no_progress) as on_progress:
        result = run_worker(request, spec.profile, threads=args.threads,
                            capability=args.cpu_capability, on_progress=on_progress)
    print_json(result)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    store = CheckpointStore.open(Path(args.dir))
    request = {"command": "replay", "dir": str(Path(args.dir).resolve()), "segment": args.segment}
    with step_progress(f"replaying segment {args.segment}", not args.no_progress) as on_progress:
        result = run_worker(request, store.spec.profile, threads=args.threads,
                            capability=args.cpu_capability, on_progress=on_progress)
    print_json({k: result[k] for k in ("segment", "match", "expected", "computed", "from_step", "to_step")})
    return 0 if result["match"] else EXIT_MISMATCH
