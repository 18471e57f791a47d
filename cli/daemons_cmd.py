"""`veritrain solver run` and `veritrain verifier run`: the long-running daemons."""

import argparse
import logging
from pathlib import Path

from cli.status_cmd import add_status_parser
from protocol.errors import InvalidInput
from sdk.client import CoordinatorClient
from sdk.keys import load_or_create_key_file
from sdk.logs import ContextFilter, add_log_format_argument, setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    solver = subparsers.add_parser("solver", help="the solver daemon").add_subparsers(
        dest="solver_command", required=True, metavar="COMMAND"
    )
    run = solver.add_parser("run", help="bid, train, commit and defend jobs until SIGTERM")
    _common(run)
    run.add_argument("--price", type=int, required=True, help="price to bid on every job")
    run.add_argument("--stake", type=int, required=True, help="stake to lock per job")
    run.add_argument("--max-jobs", type=int, default=1, help="jobs in progress at once")
    run.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    run.add_argument("--only-job", action="append", help="bid only on this job id (repeatable)")
    run.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="data-parallel ranks to train on, spawned on this host (each job runs on the most "
        "its profile.batch_blocks allows, up to this; docs/parallel.md)",
    )
    run.add_argument(
        "--prune-finished",
        action="store_true",
        help="delete a job's checkpoints and dispute traces once it is settled, failed or "
        "cancelled (nothing is asked of it after that)",
    )
    run.set_defaults(func=cmd_solver_run)
    add_status_parser(solver, "solver")
    verifier = subparsers.add_parser("verifier", help="the verifier daemon").add_subparsers(
        dest="verifier_command", required=True, metavar="COMMAND"
    )
    vrun = verifier.add_parser(
        "run", help="replay assigned segments and play disputes until SIGTERM"
    )
    _common(vrun)
    vrun.add_argument("--stake", type=int, required=True, help="standing stake to register with")
    vrun.add_argument(
        "--watch-budget",
        type=int,
        default=0,
        help="segments of its own choice it may challenge per hour (0: only drawn assignments)",
    )
    vrun.set_defaults(func=cmd_verifier_run)
    add_status_parser(verifier, "verifier")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, help="key file (created 0600 if missing)")
    parser.add_argument("--coordinator", required=True, help="coordinator URL")
    parser.add_argument("--store", required=True, help="directory for state, runs and replays")
    parser.add_argument(
        "--profile",
        action="append",
        help="execution profile label it can run "
        "(repeatable; default: this machine's pinned label and repro)",
    )
    parser.add_argument("--behaviour", default="honest", help="built-in name or module:attribute")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument(
        "--max-state-mib",
        type=int,
        default=None,
        help="largest training state (MiB) it takes; a worker needs about 3× it "
        "(default: a third of this host's memory after 1 GiB)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT (default: off)",
    )
    add_log_format_argument(parser)


def _client(args: argparse.Namespace) -> CoordinatorClient:
    handler = setup_logging(args.log_format, logging.INFO)  # quiets httpx's line per request
    client = CoordinatorClient(args.coordinator, load_or_create_key_file(Path(args.key)))
    handler.addFilter(ContextFilter(account=client.public_key))  # every line is about this key
    return client


def cmd_solver_run(args: argparse.Namespace) -> int:
    from sdk.worker import get_runnable_profiles
    from solver.daemon import SolverConfig, SolverDaemon

    config = SolverConfig(
        price=args.price,
        stake=args.stake,
        profiles=args.profile or get_runnable_profiles(),
        max_jobs=args.max_jobs,
        behaviour=args.behaviour,
        poll_s=args.poll,
        heartbeat_s=args.heartbeat,
        only_jobs=args.only_job,
        world_size=_positive(args.world_size, "world_size"),
        max_state_bytes=_max_state_bytes(args),
        prune_finished=args.prune_finished,
    )
    SolverDaemon(_client(args), Path(args.store), config).serve_metrics(args.metrics_port).run()
    return 0


def _max_state_bytes(args: argparse.Namespace) -> int:
    from sdk.daemon import compute_default_max_state_bytes

    if args.max_state_mib is None:
        return compute_default_max_state_bytes()
    return _positive(args.max_state_mib, "max_state_mib") * 2**20


def _positive(value: int, field: str) -> int:
    if value < 1:
        raise InvalidInput("must be at least 1", field)
    return value


def cmd_verifier_run(args: argparse.Namespace) -> int:
    from sdk.worker import get_runnable_profiles
    from verifier.daemon import VerifierConfig, VerifierDaemon

    config = VerifierConfig(
        stake=args.stake,
        profiles=args.profile or get_runnable_profiles(),
        behaviour=args.behaviour,
        poll_s=args.poll,
        watch_budget=max(0, args.watch_budget),
        max_state_bytes=_max_state_bytes(args),
    )
    VerifierDaemon(_client(args), Path(args.store), config).serve_metrics(args.metrics_port).run()
    return 0
