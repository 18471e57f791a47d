"""Dispute benchmarks; writes benchmarks/results/dispute.md and dispute_profit.png.

1. Economics: `veritrain simulate` (every behaviour against honest counterparts) — table + plot.
2. Dispute cost on a 1,000-step segment, per model: moves of the bisection game (binary and
   4-ary) against the bound, and the referee's compute (one training step) against replaying the
   whole segment.
3. End to end on loopback: a real coordinator (uvicorn, SQLite), a 1,000-step `mlp` segment whose
   solver perturbed step 700, both parties playing over HTTP from their traces; time from the
   challenge (the verifier's reveal) to the ruling.

Usage: python3 benchmarks/dispute_bench.py [--trials N]
"""

import argparse
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from protocol.dispute import SOLVER, VERIFIER, compute_initial_game, compute_rounds_bound  # noqa: E402
from protocol.economics import Market, compute_summary, simulate_market  # noqa: E402
from protocol.presets import example_job_spec_json  # noqa: E402
from protocol.spec import parse_job_spec  # noqa: E402
from protocol.standin import Player, StandinTrajectory, TraceTrajectory, play_game  # noqa: E402
from protocol.state import compute_chunk_hashes, encode_state  # noqa: E402
from protocol.training import build_program  # noqa: E402
from protocol.wire import DisputeStatus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEGMENT = 1000


def bench_economics(trials: int) -> tuple[dict, Path]:
    market = Market()
    summary = compute_summary(market, simulate_market(market, trials))
    rows = summary["strategies"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['role'][0]}:{r['name']}" for r in rows]
    ax.barh(
        labels,
        [r["expected_profit"] for r in rows],
        color=["tab:green" if r["honest"] else "tab:red" for r in rows],
    )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"expected profit per job (price {market.price:.0f}); green = honest")
    ax.invert_yaxis()
    fig.tight_layout()
    png = RESULTS / "dispute_profit.png"
    fig.savefig(png, dpi=110)
    return summary, png


def _time_steps(program, state, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        state = program.step(state)
    return (time.perf_counter() - start) / count


def bench_dispute_cost(model: str) -> dict:
    program = build_program(parse_job_spec(example_job_spec_json(model, steps=SEGMENT)))
    state = program.initial_state()
    chunks = len(compute_chunk_hashes(state))
    per_step = _time_steps(program, program.step(state), 5)
    moves = {}
    for arity in (2, 4):
        truth = StandinTrajectory(b"bench", chunks)
        cheat = StandinTrajectory(b"bench", chunks, (701, None), b"cheat")
        keys = SigningKey(b"s" * 32), SigningKey(b"v" * 32)
        game = compute_initial_game(
            game_id="ab" * 32,
            solver_key=bytes(keys[0].verify_key).hex(),
            verifier_key=bytes(keys[1].verify_key).hex(),
            start_step=0,
            start_root=truth.root(0).hex(),
            end_step=SEGMENT,
            solver_root=cheat.root(SEGMENT).hex(),
            verifier_root=truth.root(SEGMENT).hex(),
            num_chunks=chunks,
            now=0,
            move_timeout=60,
            arity=arity,
        )
        final = play_game(
            game, Player(SOLVER, keys[0], cheat), Player(VERIFIER, keys[1], truth), truth
        )
        moves[arity] = (final.moves, compute_rounds_bound(SEGMENT, chunks, arity), final.lo)
    return {
        "model": model,
        "chunks": chunks,
        "step_ms": per_step * 1000,
        "moves": moves,
        "replay_s": per_step * SEGMENT,
    }


def _perturbed(state: dict) -> dict:
    name = min(k for k in state if k.startswith("param/"))
    return {**state, name: state[name] + 1e-3}


def bench_end_to_end() -> dict:
    """Challenge → ruling on a real coordinator for a 1,000-step mlp segment."""
    from cli.audit_cmd import check_coordinator
    from sdk.disputes import play_until_idle
    from tests.coordinator.market import TrainedJob, funded, open_verification, verify_segment
    from tests.coordinator.server import running_server

    spec_json = example_job_spec_json("mlp", steps=SEGMENT)
    spec_json.update(checkpoint_interval=SEGMENT, batch_size=8, seed=11)
    spec_json["model"]["config"] = {"hidden": [8], "dropout": 0.0}
    program = build_program(parse_job_spec(spec_json))
    honest, cheat = {0: program.initial_state()}, {0: program.initial_state()}
    trace_start = time.perf_counter()
    for step in range(1, SEGMENT + 1):
        honest[step] = program.step(honest[step - 1])
        after = program.step(cheat[step - 1])
        cheat[step] = _perturbed(after) if step == 701 else after
    trace_s = (time.perf_counter() - trace_start) / 2
    with tempfile.TemporaryDirectory() as tmp, running_server("sqlite", Path(tmp)) as server:
        from sdk.store import CheckpointStore

        store = CheckpointStore.create(Path(tmp) / "run", parse_job_spec(spec_json))
        for step in (0, SEGMENT):
            store.write_checkpoint(cheat[step])
        job = TrainedJob(spec_json, CheckpointStore.open(Path(tmp) / "run"))
        from sdk.client import CoordinatorClient

        def make(key=None):
            return CoordinatorClient(server.url, key or SigningKey.generate())

        submitter, solver, verifier = funded(make), funded(make), funded(make)
        a = open_verification(submitter, solver, verifier, job)
        true_root = TraceTrajectory({SEGMENT: compute_chunk_hashes(honest[SEGMENT])}).root(SEGMENT)
        salt = verify_segment(verifier, a.id, true_root)
        solver.upload_checkpoint(job.job_id, 1, SEGMENT, job.checkpoint_bytes(1), job.proof(1))
        cheat_trace = TraceTrajectory({s: compute_chunk_hashes(v) for s, v in cheat.items()})
        honest_trace = TraceTrajectory({s: compute_chunk_hashes(v) for s, v in honest.items()})
        start = time.perf_counter()
        verifier.reveal_verification(a.id, true_root, salt)
        [dispute] = verifier.list_disputes()
        players = [
            (solver, Player(SOLVER, solver.key, cheat_trace)),
            (verifier, Player(VERIFIER, verifier.key, honest_trace)),
        ]
        view = verifier.get_dispute(dispute.id)
        while view.status == DisputeStatus.OPEN:
            for client, player in players:
                view = play_until_idle(client, dispute.id, player, lambda s: encode_state(cheat[s]))
        elapsed = time.perf_counter() - start
        audit_ok = check_coordinator(verifier).ok
    return {
        "challenge_to_ruling_s": elapsed,
        "trace_s": trace_s,
        "winner": view.winner,
        "step": view.dispute_step,
        "chunk": view.dispute_chunk,
        "audit_ok": audit_ok,
        "moves": view.game_json["moves"],
    }


def write_report(summary: dict, png: Path, costs: list[dict], e2e: dict) -> str:
    lines = [
        "# Dispute benchmarks",
        "",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python {platform.python_version()}. "
        "Command: `python3 benchmarks/dispute_bench.py`.",
        "",
        "## Economics (`veritrain simulate`)",
        "",
        f"Stake ÷ price **{summary['stake_multiple']}**, verification fraction **{summary['verification_fraction']}**; "
        f"verdict: {'every honest strategy earns and every deviation earns less than honest play' if summary['ok'] else 'BROKEN'}.",
        "",
        "| role | behaviour | honest | expected profit | gain over honest | catch rate |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary["strategies"]:
        lines.append(
            f"| {s['role']} | {s['name']} | {'yes' if s['honest'] else 'no'} | {s['expected_profit']:.1f} "
            f"| {s['gain_over_honest']:.1f} | {s['catch_rate']:.3f} |"
        )
    lines += [
        "",
        f"![expected profit per strategy]({png.name})",
        "",
        f"## Dispute cost on a {SEGMENT}-step segment",
        "",
        "Cheat from step 700 (all chunks differ after it); moves include both parties' and the game "
        "pins step 700 in every case.",
        "",
        "| model | state chunks | moves (binary / bound) | moves (4-ary / bound) | referee: one step | replaying the segment |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        (m2, b2, _), (m4, b4, _) = c["moves"][2], c["moves"][4]
        lines.append(
            f"| {c['model']} | {c['chunks']} | {m2} / {b2} | {m4} / {b4} | {c['step_ms']:.1f} ms "
            f"| {c['replay_s']:.2f} s |"
        )
    lines += [
        "",
        "## End to end on loopback (real coordinator, SQLite)",
        "",
        f"1,000-step `mlp` segment, solver perturbed step 700: challenge (the verifier's reveal) → ruling "
        f"**{e2e['challenge_to_ruling_s']:.2f} s** (target < 5 s), {e2e['moves']} moves over HTTP, pinned "
        f"step {e2e['step']} chunk {e2e['chunk']}, winner {e2e['winner']}, audit "
        f"{'passed' if e2e['audit_ok'] else 'FAILED'}. Building a party's 1,000-step trace (once, when it "
        f"replays the segment) took {e2e['trace_s']:.2f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary, png = bench_economics(args.trials)
    costs = [bench_dispute_cost(m) for m in ("mlp", "cnn", "gpt-tiny")]
    e2e = bench_end_to_end()
    report = write_report(summary, png, costs, e2e)
    (RESULTS / "dispute.md").write_text(report)
    print(report)
    return 0 if summary["ok"] and e2e["winner"] == "verifier" and e2e["step"] == 700 else 1


if __name__ == "__main__":
    sys.exit(main())
