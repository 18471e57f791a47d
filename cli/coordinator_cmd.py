"""`veritrain coordinator serve`: run the coordinator under uvicorn.

`--workers N` starts N replica processes on one socket (uvicorn's supervisor restarts one that
dies). Replicas share nothing but the database, so N > 1 needs PostgreSQL; SQLite is the
single-process embedded default. Several hosts behind a load balancer are the same thing, one
`serve` per host (docs/production.md).
"""

import argparse
import importlib
import logging
import os
import sys

from cli.coordinator_gc import register_gc
from sdk.logs import add_log_format_argument, setup_logging

# How `serve` hands its command line to replica processes, which uvicorn starts fresh (spawn):
# settings through their usual VERITRAIN_ variables, logging through these.
LOG_FORMAT_ENV = "VERITRAIN_SERVE_LOG_FORMAT"
LOG_LEVEL_ENV = "VERITRAIN_SERVE_LOG_LEVEL"
ACCESS_LOG_ENV = "VERITRAIN_SERVE_ACCESS_LOG"
# A replica answers the supervisor's health pings from start-up on; a loaded host importing the
# stack may take longer than uvicorn's 5 s default, and a missed ping kills the replica.
WORKER_HEALTHCHECK_S = 60
BODY_BUFFER_BYTES = 1 << 20  # unread request body a connection may hold (uvicorn: 64 KiB)


def _setting_overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.dev:
        overrides["dev"] = True
    if args.key_file:
        overrides["signing_key_file"] = args.key_file
    return overrides


def _setup_logs(log_format: str, log_level: str, access_log: bool) -> None:
    setup_logging(log_format, log_level)
    # `--access-log` turns on our `http.request` lines (ids, signer, latency); uvicorn's own
    # access log stays off so a request is never logged twice.
    logging.getLogger("veritrain.coordinator.http").setLevel(
        logging.INFO if access_log else logging.WARNING
    )


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn  # imported here: other commands must not pay for the server stack

    from coordinator.settings import Settings

    settings = Settings(**_setting_overrides(args))
    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        print(
            f"veritrain coordinator serve: --workers {args.workers} needs PostgreSQL "
            "(--database-url postgresql+psycopg://...); SQLite serves one process only",
            file=sys.stderr,
        )
        return 2
    _setup_logs(args.log_format, args.log_level, args.access_log)
    raise_body_buffer_limit()
    common = dict(
        host=args.host, port=args.port, log_level=args.log_level, access_log=False, log_config=None
    )  # log_config=None: uvicorn's loggers go through setup_logging's handler
    if args.workers == 1:
        from coordinator.app import create_app

        uvicorn.run(create_app(settings), **common)
        return 0
    _prepare_replicas(settings)
    _export_for_replicas(args)
    uvicorn.run(
        "cli.coordinator_cmd:create_replica_app",
        factory=True,
        workers=args.workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **common,
    )
    return 0


def _prepare_replicas(settings) -> None:  # noqa: ANN001 — Settings, imported lazily
    """Once, before any replica starts: create the key file (replicas racing to create it could
    read a half-written one) and migrate (so a migration error is reported once, here)."""
    from coordinator.db import Database, upgrade_database

    settings.load_signing_key()
    db = Database(settings.database_url)
    try:
        upgrade_database(db.engine)
    finally:
        db.dispose()


def _export_for_replicas(args: argparse.Namespace) -> None:
    if args.database_url:
        os.environ["VERITRAIN_DATABASE_URL"] = args.database_url
    if args.dev:
        os.environ["VERITRAIN_DEV"] = "true"
    if args.key_file:
        os.environ["VERITRAIN_SIGNING_KEY_FILE"] = str(args.key_file)
    os.environ[LOG_FORMAT_ENV] = args.log_format
    os.environ[LOG_LEVEL_ENV] = args.log_level
    os.environ[ACCESS_LOG_ENV] = "1" if args.access_log else ""


def create_replica_app():  # noqa: ANN201 — a FastAPI app; uvicorn imports this in each replica
    from coordinator.app import create_app

    _setup_logs(
        os.environ.get(LOG_FORMAT_ENV, "text"),
        os.environ.get(LOG_LEVEL_ENV, "info"),
        bool(os.environ.get(ACCESS_LOG_ENV)),
    )
    raise_body_buffer_limit()
    return create_app()


def raise_body_buffer_limit() -> None:
    """uvicorn stops reading a socket once 64 KiB of a request body wait unread and starts
    again at the app's next read: a 64 MiB upload part paid a pause and a resume per 64 KiB.
    At BODY_BUFFER_BYTES a part is received ~1.3× faster (docs/decisions.md)."""
    for protocol in ("h11_impl", "httptools_impl"):
        try:
            module = importlib.import_module(f"uvicorn.protocols.http.{protocol}")
        except ImportError:  # httptools is optional to uvicorn
            continue
        module.HIGH_WATER_LIMIT = BODY_BUFFER_BYTES


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 256, not {text!r}")
    return count


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coordinator", help="run the coordinator service")
    commands = parser.add_subparsers(dest="coordinator_command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the REST API with uvicorn")
    serve.add_argument("--host", default=os.environ.get("VERITRAIN_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("VERITRAIN_PORT", "8000")))
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=os.environ.get("VERITRAIN_WORKERS", "1"),
        help="replica processes on this port (default: VERITRAIN_WORKERS or 1); "
        "more than 1 needs PostgreSQL",
    )
    serve.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: VERITRAIN_DATABASE_URL or "
        "a SQLite file in the current directory)",
    )
    serve.add_argument("--key-file", help="coordinator signing key file (created 0600 if missing)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="enable the dev faucet and protocol-clock endpoints (never in production)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--access-log", action="store_true", help="one http.request line per request"
    )
    add_log_format_argument(serve)
    serve.set_defaults(func=run_serve)
    register_gc(commands)  # `veritrain coordinator gc` (cli/coordinator_gc.py)
