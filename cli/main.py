"""The `veritrain` command. Each command group lives in its own module with `register(subparsers)`.

Errors are one line on stderr — never a traceback (set VERITRAIN_DEBUG=1 to see one):
exit 2 for bad input or a refused profile, 3 for an internal error.
"""

import argparse
import importlib
import os
import sys

from protocol.errors import VeritrainError

COMMAND_MODULES = [
    "cli.job",
    "cli.coordinator_cmd",
    "cli.audit_cmd",
    "cli.simulate",
    "cli.conformance_cmd",
    "cli.keys_cmd",
    "cli.account_cmd",
    "cli.daemons_cmd",
    "cli.demo",
    "cli.model_cmd",
]
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veritrain", description="Verifiable ML training marketplace"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except VeritrainError as err:
        print(f"veritrain: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("veritrain: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 — the last line of defence against tracebacks
        if os.environ.get("VERITRAIN_DEBUG"):
            raise
        print(f"veritrain: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
