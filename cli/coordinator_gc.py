"""`veritrain coordinator gc`: delete abandoned uploads and blobs nothing references, by the rule
in docs/coordinator.md ("Blob store"). Runs with the coordinator's own settings (the
VERITRAIN_ environment), against its database and blob store, beside a running coordinator."""

import argparse
import json


def run_gc(args: argparse.Namespace) -> int:
    from coordinator.app import create_runtime  # the server stack only for this command
    from coordinator.blobstore.gc import collect_garbage
    from coordinator.settings import Settings

    overrides = {"database_url": args.database_url} if args.database_url else {}
    if args.key_file:
        overrides["signing_key_file"] = args.key_file
    rt = create_runtime(Settings(**overrides))
    try:
        report = collect_garbage(rt)
    finally:
        rt.close()
    print(json.dumps(report.__dict__, sort_keys=True))
    return 0


def register_gc(commands: argparse._SubParsersAction) -> None:
    gc = commands.add_parser(
        "gc", help="delete abandoned uploads and unreferenced blobs (after the grace period)"
    )
    gc.add_argument("--database-url", help="SQLAlchemy URL (default: VERITRAIN_DATABASE_URL)")
    gc.add_argument("--key-file", help="coordinator signing key file")
    gc.set_defaults(func=run_gc)
