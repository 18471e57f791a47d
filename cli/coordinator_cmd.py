"""`veritrain coordinator serve`: run the coordinator under uvicorn."""

import argparse
import logging
import os

from sdk.logs import add_log_format_argument, setup_logging


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn  # imported here: other commands must not pay for the server stack

    from coordinator.app import create_app
    from coordinator.settings import Settings

    overrides = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.dev:
        overrides["dev"] = True
    if args.key_file:
        overrides["signing_key_file"] = args.key_file
    setup_logging(args.log_format, args.log_level)
    # `--access-log` turns on our `http.request` lines (ids, signer, latency); uvicorn's own
    # access log stays off so a request is never logged twice.
    logging.getLogger("veritrain.coordinator.http").setLevel(
        logging.INFO if args.access_log else logging.WARNING
    )
    app = create_app(Settings(**overrides))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        log_config=None,  # uvicorn's loggers go through setup_logging's handler
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coordinator", help="run the coordinator service")
    commands = parser.add_subparsers(dest="coordinator_command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the REST API with uvicorn")
    serve.add_argument("--host", default=os.environ.get("VERITRAIN_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("VERITRAIN_PORT", "8000")))
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
