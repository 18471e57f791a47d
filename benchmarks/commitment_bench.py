"""Commitment latency vs the number of registered verifiers; writes benchmarks/results/commitment.md.

A commitment draws the job's verifiers inside its write transaction, so its cost must not grow
with the verifiers registered. Two coordinators run side by side: one with 10 registered
verifiers, one with 10^4, and the commitment requests alternate between them one by one (machine
noise hits both alike). Ratio = p99 (and median) with 10^4 ÷ with 10; target <= 1.2.

Two populations of the large side:
- "other profiles": 10 verifiers replay the job's profile, the rest replay 20 other profiles
  (the target: a commitment reads only its own profile's candidates, through an index).
- "same profile": all 10^4 replay the job's profile (for information: the draw is weighted by
  stake, so it must read every candidate of the profile; no target).

Set-up speed: verifiers are written straight into `verifiers`, `verifier_profiles` and their
standing-stake `ledger_accounts` rows with bulk SQL inserts (no log entries, no postings, so an
audit of these throw-away ledgers would flag the unminted stake); 5 of the 10 on each side
register over HTTP through the real endpoint. The commitments themselves are real signed requests.

Usage: python3 benchmarks/commitment_bench.py [--database sqlite|postgres|both] [--quick]
PostgreSQL needs VERITRAIN_TEST_POSTGRES_URL; each run uses a fresh schema.
"""

import argparse
import datetime
import platform
import sys
import tempfile
from pathlib import Path

from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.coordinator_bench import (  # noqa: E402
    ScalingSide,
    database,
    percentile,
    run_commitments,
    server_process,
)

RESULTS = ROOT / "benchmarks" / "results" / "commitment.md"
HTTP_VERIFIERS = 5  # registered through the API on each side by ScalingSide
SMALL, LARGE = 10, 10_000
OTHER_PROFILES = [f"pinned:bench-other-{n}:float32:t1:avx2" for n in range(20)]


def populate_verifiers(url: str, tmp: Path, count: int, profile_of) -> None:
    """Insert `count` verifiers (profile_of(n) → their profile) with a standing stake of 500."""
    import os

    from sqlalchemy import insert

    from coordinator.app import create_runtime
    from coordinator.ledger.accounts import STAKE
    from coordinator.models import LedgerAccount, Verifier, VerifierProfile
    from coordinator.settings import tiny_preset

    rt = create_runtime(tiny_preset(database_url=url, signing_key_file=tmp / "key"))
    keys = [os.urandom(32).hex() for _ in range(count)]
    for start in range(0, count, 1000):
        chunk = list(enumerate(keys))[start : start + 1000]

        def batch(session, chunk=chunk) -> None:
            session.execute(
                insert(Verifier),
                [
                    {"public_key": k, "profiles": f'["{profile_of(n)}"]', "registered_at": 0.0}
                    for n, k in chunk
                ],
            )
            session.execute(
                insert(VerifierProfile),
                [{"public_key": k, "profile_label": profile_of(n)} for n, k in chunk],
            )
            session.execute(
                insert(LedgerAccount),
                [{"kind": STAKE, "owner": k, "job_id": "", "balance": 500} for _, k in chunk],
            )

        if chunk:
            rt.db.write(batch)
    rt.db.dispose()


def bench(db_kind: str, tmp: Path, samples: int, same_profile: bool) -> tuple[dict, dict]:
    from protocol.spec import parse_job_spec
    from tests.coordinator.market import tiny_spec_json

    submitter_key = SigningKey.generate()
    profile = parse_job_spec(tiny_spec_json()).profile.label

    def large_profile(n: int) -> str:
        if same_profile or n < SMALL - HTTP_VERIFIERS:
            return profile
        return OTHER_PROFILES[n % len(OTHER_PROFILES)]

    with database(db_kind, tmp, "small") as small_url, database(db_kind, tmp, "large") as large_url:
        populate_verifiers(small_url, tmp, SMALL - HTTP_VERIFIERS, lambda n: profile)
        populate_verifiers(large_url, tmp, LARGE - HTTP_VERIFIERS, large_profile)
        with (
            server_process("coordinator", small_url, tmp) as small_base,
            server_process("coordinator", large_url, tmp) as large_base,
        ):
            # bid_jobs=samples: one solver per side; no bids are measured here
            sides = [
                ScalingSide(base, [], submitter_key, samples, samples, profile)
                for base in (small_base, large_base)
            ]
            for side in sides:
                side.sub.faucet(10**12)  # pays the bounties
            run_commitments(sides, samples)
    return tuple(_summary(side.commit_lat) for side in sides)


def _summary(latencies: list[float]) -> dict:
    return {
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "n": len(latencies),
    }


def _row(db_kind: str, population: str, small: dict, large: dict) -> str:
    p50, p99 = large["p50"] / small["p50"], large["p99"] / small["p99"]
    target = "n/a" if population == "same profile" else ("yes" if p99 <= 1.2 else "NO")
    return (
        f"| {db_kind} | {population} | {small['n']} | {small['p50'] * 1e3:.1f} "
        f"| {small['p99'] * 1e3:.1f} | {large['p50'] * 1e3:.1f} | {large['p99'] * 1e3:.1f} "
        f"| {p50:.2f} | {p99:.2f} | {target} |"
    )


def write_report(rows: list[str], argv: list[str]) -> str:
    header = [
        "# Commitment latency vs registered verifiers",
        "",
        f"- machine: {platform.node()} — {platform.platform()}, {platform.processor() or '?'}, "
        f"Python {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `python3 benchmarks/commitment_bench.py {' '.join(argv)}`".rstrip(),
        f"- sides: {SMALL} vs {LARGE} registered verifiers; requests alternate between the two",
        "  coordinators; latencies in ms, ratio = large ÷ small; target: p99 ratio <= 1.2 with",
        "  the other verifiers on other profiles (see the module docstring for the set-up).",
        "",
        "| database | large side's verifiers | commits | p50 (10) | p99 (10) "
        "| p50 (10^4) | p99 (10^4) | p50 ratio | p99 ratio | <= 1.2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    samples = 100 if args.quick else 300
    rows = []
    for db_kind in ["sqlite", "postgres"] if args.database == "both" else [args.database]:
        for same_profile in (False, True):
            population = "same profile" if same_profile else "other profiles"
            with tempfile.TemporaryDirectory(prefix="veritrain-bench-") as d:
                small, large = bench(db_kind, Path(d), samples, same_profile)
            rows.append(_row(db_kind, population, small, large))
            print(rows[-1], flush=True)
    report = write_report(rows, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
