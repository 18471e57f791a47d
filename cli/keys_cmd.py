"""`veritrain keys generate|show`: account keys (an account is an ed25519 public key)."""

import argparse
from pathlib import Path

from cli.common import print_json
from sdk.keys import create_key_file, load_key_file


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="generate and show account keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    generate = keys.add_parser("generate", help="write a new key file (0600, never overwritten)")
    generate.add_argument("--out", required=True)
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(func=cmd_generate)
    show = keys.add_parser("show", help="print a key file's public key")
    show.add_argument("file")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)


def _print_key(path: str, public_key: str, as_json: bool) -> None:
    if as_json:
        print_json({"file": path, "public_key": public_key})
    else:
        print(public_key)


def cmd_generate(args: argparse.Namespace) -> int:
    key = create_key_file(Path(args.out))
    _print_key(args.out, bytes(key.verify_key).hex(), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _print_key(args.file, bytes(load_key_file(Path(args.file)).verify_key).hex(), args.json)
    return 0
