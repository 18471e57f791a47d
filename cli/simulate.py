"""`veritrain simulate`: every built-in behaviour against honest counterparts, through the
protocol's economics and dispute game on the stand-in program."""

import argparse
import json

from rich.console import Console
from rich.table import Table

from protocol.economics import Market, compute_summary, simulate_market

EXIT_UNPROFITABLE_HONESTY = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="expected profit of every behaviour (economics check)"
    )
    parser.add_argument("--trials", type=int, default=200, help="jobs simulated per behaviour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=Market.segments)
    parser.add_argument(
        "--sampled", type=int, default=Market.sampled, help="segments replayed per verifier"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.trials < 1 or args.segments < 1 or not 1 <= args.sampled <= args.segments:
        raise SystemExit("veritrain: error: need trials >= 1 and 1 <= sampled <= segments")
    market = Market(segments=args.segments, sampled=args.sampled)
    summary = compute_summary(market, simulate_market(market, args.trials, args.seed))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary)
    return 0 if summary["ok"] else EXIT_UNPROFITABLE_HONESTY


def _print_table(summary: dict) -> None:
    table = Table(
        title=f"stake ÷ price {summary['stake_multiple']}, verification fraction "
        f"{summary['verification_fraction']}"
    )
    for column in (
        "role",
        "behaviour",
        "honest",
        "expected profit",
        "gain over honest",
        "catch rate",
    ):
        table.add_column(column)
    for s in summary["strategies"]:
        table.add_row(
            s["role"],
            s["name"],
            "yes" if s["honest"] else "no",
            f"{s['expected_profit']:.1f}",
            f"{s['gain_over_honest']:.1f}",
            f"{s['catch_rate']:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(_assurance_table(summary["assurance"]))
    print(
        "every honest strategy earns and every deviation loses"
        if summary["ok"]
        else "ECONOMICS BROKEN: some deviation pays"
    )


def _assurance_table(levels: list[dict]) -> Table:
    """What each built-in assurance level buys against a one-step perturbation."""
    table = Table(
        title="assurance levels: segments sampled, verification compute %, single-step "
        "survival, cost to corrupt one model (at the level's stake)"
    )
    for column in (
        "level",
        "detection",
        "sampled",
        "verifiers",
        "verify %",
        "survival",
        "cost to corrupt",
    ):
        table.add_column(column)
    for a in levels:
        cost = a["cost_to_corrupt"]
        table.add_row(
            a["level"],
            f"{a['detection_probability']:.2f}",
            f"{a['num_segments']}/{a['total_segments']}",
            str(a["num_verifiers"]),
            f"{100 * a['verification_fraction']:.0f}%",
            f"{a['single_step_survival']:.2f}",
            "∞" if cost is None else f"{cost:.1f}",
        )
    return table
