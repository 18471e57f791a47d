"""The demo's HTML report: outcome table, loss curves, balances over time, each dispute's
bisection (plots by matplotlib, Agg backend)."""

import html
import json
from pathlib import Path

from nacl.signing import SigningKey

from sdk.client import CoordinatorClient


def _plot(path: Path, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _loss_curves(ax, workdir: Path, rows: list[dict]) -> None:
    for r in rows:
        losses_file = workdir / r["solver"] / "jobs" / r["job_id"] / "losses.json"
        if losses_file.exists():
            losses = sorted((int(k), v) for k, v in json.loads(losses_file.read_text()).items())
            ax.plot(
                [s for s, _ in losses],
                [v for _, v in losses],
                label=f"{r['model']} ({r['solver']})",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()


def _balances(ax, client: CoordinatorClient, keys: dict[str, SigningKey]) -> None:
    owners = {bytes(k.verify_key).hex(): name for name, k in keys.items()}
    totals = {name: 0 for name in owners.values()}
    series: dict[str, list[tuple[int, int]]] = {name: [] for name in owners.values()}
    for entry in client.iter_log_entries(client.get_tree_head().size):
        body = json.loads(entry.body)
        for account, delta in body.get("postings", []):
            name = owners.get(account.split(":")[1])
            if name:
                totals[name] += delta
                series[name].append((body["index"], totals[name]))
    for name, points in series.items():
        if points:
            ax.step([i for i, _ in points], [v for _, v in points], where="post", label=name)
    ax.set_xlabel("public log entry")
    ax.set_ylabel("balance incl. stakes")
    ax.legend(fontsize=7)


def _bisection(ax, game: dict) -> None:
    steps = [(lo, hi) for phase, lo, hi in game.get("trail", []) if phase == "steps"]
    chunks = [(a, b) for phase, a, b in game.get("trail", []) if phase == "chunks"]
    for i, (lo, hi) in enumerate(steps):
        ax.plot([lo, hi], [i, i], color="tab:blue", linewidth=4)
    ax.set_xlabel(
        f"training step (pinned: {game['lo']} → {game['lo'] + 1}); "
        f"then {len(chunks)} chunk rounds down to chunk {game['node'][0]}"
    )
    ax.set_ylabel("round")
    ax.invert_yaxis()


def write_report(
    report_dir: Path,
    workdir: Path,
    client: CoordinatorClient,
    rows: list[dict],
    keys: dict[str, SigningKey],
) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    images = [
        _plot(report_dir / "losses.png", lambda ax: _loss_curves(ax, workdir, rows)),
        _plot(report_dir / "balances.png", lambda ax: _balances(ax, client, keys)),
    ]
    for r in rows:
        for d in client.list_disputes(party=bytes(keys[r["solver"]].verify_key).hex(), status=None):
            if d.job_id == r["job_id"]:
                images.append(
                    _plot(
                        report_dir / f"dispute-{d.id}.png",
                        lambda ax, g=d.game_json: _bisection(ax, g),
                    )
                )
    header = "".join(
        f"<th>{c}</th>"
        for c in (
            "job",
            "model",
            "solver",
            "behaviour",
            "outcome",
            "dispute step",
            "chunk",
            "slashed",
            "paid",
        )
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r["job_id"][:12],
                r["model"],
                r["solver"],
                r["behaviour"],
                r["outcome"],
                r["dispute_step"],
                r["dispute_chunk"],
                r["slashed"],
                r["paid"],
            )
        )
        + "</tr>"
        for r in rows
    )
    figures = "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>veritrain demo</title></head><body>"
        f"<h1>veritrain demo</h1><table border='1' cellpadding='4'><tr>{header}</tr>{body}</table>"
        f"{figures}</body></html>"
    )
    path = report_dir / "report.html"
    path.write_text(page)
    return path
