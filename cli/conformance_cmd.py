"""`veritrain conformance`: check a strategy, or a daemon, against the protocol's promises.

- `--behaviour module:attribute` (or a built-in name, repeatable): its dispute games against an
  honest counterpart through every invariant of `protocol.testing`, and its money against honest
  play in the market simulation. Exit 0 when the protocol held (every invariant, and no deviation
  earns as much as honest play), 1 when something broke, 2 for bad input.
- `--solver-cmd` / `--verifier-cmd`: a daemon implementation, started as the given command line,
  in a market of its own on this machine (see `cli.conformance_daemons`).
"""

import argparse
import json
import math
import sys

from rich.console import Console
from rich.table import Table

from protocol.behaviours import BUILTIN
from protocol.economics import Market
from protocol.errors import InvalidInput
from protocol.testing import WRONG_REPLAY, ConformanceReport, load_behaviour, run_conformance

EXIT_BROKEN = 1
# The simulation walks every segment of a job and plays every game: bounded so a typo is an
# error, not an hour of CPU.
MAX_GAMES, MAX_SEGMENTS = 100_000, 100_000
ROLES = ("solver", "verifier")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "conformance",
        help="check a strategy or a daemon against the dispute and money invariants",
    )
    target = parser.add_argument_group("what to check (at least one)")
    target.add_argument(
        "--behaviour",
        action="append",
        default=[],
        help="a built-in behaviour name or package.module:attribute (repeatable); 'builtin' "
        "checks every built-in one",
    )
    target.add_argument(
        "--solver-cmd",
        help="a solver daemon's command line; {coordinator}, {key} and {store} are filled in",
    )
    target.add_argument(
        "--verifier-cmd",
        help="a verifier daemon's command line; {coordinator}, {key} and {store} are filled in",
    )
    market = parser.add_argument_group("the market the money is simulated at")
    defaults = Market()
    market.add_argument("--segments", type=int, default=defaults.segments)
    market.add_argument(
        "--sampled", type=int, default=defaults.sampled, help="segments replayed per verifier"
    )
    market.add_argument("--forced-error-rate", type=float, default=defaults.forced_error_rate)
    market.add_argument(
        "--stake-margin",
        type=float,
        default=defaults.stake_margin,
        help="solver stake = margin × compute cost ÷ sampled",
    )
    parser.add_argument("--games", type=int, default=200, help="dispute games per behaviour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300, help="daemon checks: seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=cmd_conformance)


def cmd_conformance(args: argparse.Namespace) -> int:
    if not (args.behaviour or args.solver_cmd or args.verifier_cmd):
        raise InvalidInput("name a --behaviour, a --solver-cmd or a --verifier-cmd", "conformance")
    reports = [run_conformance(b, _market(args), args.games, args.seed) for b in _behaviours(args)]
    daemon_checks = _run_daemon_checks(args) if args.solver_cmd or args.verifier_cmd else []
    passed = all(r.passed for r in reports) and all(c["passed"] for c in daemon_checks)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": passed,
                    "behaviours": [r.to_json() for r in reports],
                    "daemon_checks": daemon_checks,
                },
                indent=2,
            )
        )
    else:
        _print(reports, daemon_checks, passed)
    return 0 if passed else EXIT_BROKEN


def _market(args: argparse.Namespace) -> Market:
    if not 1 <= args.games <= MAX_GAMES or not 1 <= args.segments <= MAX_SEGMENTS:
        raise InvalidInput(f"need 1 <= games <= {MAX_GAMES}, 1 <= segments <= {MAX_SEGMENTS}")
    if not 0 <= args.sampled <= args.segments:
        raise InvalidInput("need 0 <= sampled <= segments", "sampled")
    if not 0 <= args.forced_error_rate <= 1:
        raise InvalidInput("must be in [0, 1]", "forced_error_rate")
    if not 0 <= args.stake_margin < math.inf:  # NaN fails too: it would hide any profit
        raise InvalidInput("must be a finite number of at least 0", "stake_margin")
    return Market(
        segments=args.segments,
        sampled=args.sampled,
        forced_error_rate=args.forced_error_rate,
        stake_margin=args.stake_margin,
    )


def _behaviours(args: argparse.Namespace) -> list:
    found = []
    for name in args.behaviour:
        if name == "builtin":
            found.extend(BUILTIN.values())
            continue
        found.append(_load_any_role(name))
    return found


def _load_any_role(name: str):
    if ":" not in name:
        for role in ROLES:
            if (role, name) in BUILTIN or name == WRONG_REPLAY.name:
                return load_behaviour(name, role if name != WRONG_REPLAY.name else "verifier")
        known = ", ".join(sorted({n for _, n in BUILTIN}))
        raise InvalidInput(f"unknown behaviour '{name}' (built-in: {known}; or module:attribute)")
    try:
        return load_behaviour(name, ROLES[0])
    except InvalidInput as as_solver:
        if "is not a" not in str(as_solver):
            raise  # it could not be loaded at all
    return load_behaviour(name, ROLES[1])


def _run_daemon_checks(args: argparse.Namespace) -> list[dict]:
    from cli.conformance_daemons import check_daemons  # starts processes: only when asked

    return check_daemons(args.solver_cmd, args.verifier_cmd, args.timeout)


def _print(reports: list[ConformanceReport], daemon_checks: list[dict], passed: bool) -> None:
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs keep whole columns
    if reports:
        console.print(_behaviour_table(reports))
        for report in reports:
            for name, message in report.failures.items():
                console.print(f"[red]{report.role} {report.name}: {name} failed[/red]\n{message}")
    if daemon_checks:
        table = Table(title="daemon checks (public API only)")
        for column in ("daemon", "check", "result", "detail"):
            table.add_column(column)
        for check in daemon_checks:
            result = "pass" if check["passed"] else "FAIL"
            table.add_row(check["daemon"], check["check"], result, check["detail"])
        console.print(table)
    print("conformance: PASS" if passed else "conformance: FAIL")


def _behaviour_table(reports: list[ConformanceReport]) -> Table:
    table = Table(title="strategies against honest counterparts")
    columns = (
        "role",
        "behaviour",
        "games",
        "lost",
        "caught (per job)",
        "first divergence held",
        "gain over honest",
        "verdict",
    )
    for column in columns:
        table.add_column(column)
    for r in reports:
        held = "n/a" if r.games == 0 else "no" if "first divergence pinned" in r.failures else "yes"
        verdict = "broken" if r.failures else "PROFITABLE" if r.profitable else "held"
        table.add_row(
            r.role,
            r.name,
            str(r.games),
            str(r.games_lost),
            f"{r.catch_rate:.3f}",
            held,
            f"{r.gain_over_honest:+.1f}",
            verdict,
        )
    return table
