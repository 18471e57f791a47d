"""The fixed-order matrix product against torch.mm (MKL sgemm) on the shapes a ~25M-parameter GPT
trains with: writes benchmarks/results/gemm.md.

Run:  python3 benchmarks/gemm_bench.py --json after.json [--before before.json]

Each product is timed with the operands laid out as the repro training step passes them:
forward x·Wᵀ (B a transposed view of the row-major weight), grad_x = g·W (both row-major) and
grad_W = gᵀ·x (A a transposed view). 2 intra-op threads, the two implementations interleaved
round by round so machine noise hits both; medians. `--before` adds the numbers of an earlier
run (e.g. the base commit's build) to the table.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from protocol.repro.backend import get_cpu_kernels

THREADS = 2
RESULTS = Path(__file__).parent / "results" / "gemm.md"

# (name, M, K, N, layout): "xwT" = x (M,K) · W(N,K)ᵀ, "gW" = g (M,K) · W (K,N), "gTx" = g(K,M)ᵀ · x (K,N)
SHAPES = [
    ("forward x·Wᵀ", 1024, 384, 1152, "xwT"),
    ("forward x·Wᵀ", 4096, 1024, 1024, "xwT"),
    ("forward x·Wᵀ", 2048, 512, 2048, "xwT"),
    ("forward x·Wᵀ", 2048, 2048, 512, "xwT"),
    ("grad_x g·W, linear 512→2048", 4096, 2048, 512, "gW"),
    ("grad_W gᵀ·x, linear 512→2048", 2048, 4096, 512, "gTx"),
    ("grad_x g·W, linear 2048→512", 4096, 512, 2048, "gW"),
    ("grad_W gᵀ·x, linear 2048→512", 512, 4096, 2048, "gTx"),
]


def operands(m: int, k: int, n: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(m * 7 + k * 5 + n)
    r = lambda *shape: torch.rand(shape, generator=gen) * 2 - 1  # noqa: E731
    if layout == "xwT":
        return r(m, k), r(n, k).t()
    if layout == "gW":
        return r(m, k), r(k, n)
    return r(k, m).t(), r(k, n)


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(rounds: int) -> list[dict]:
    torch.set_num_threads(THREADS)
    kernels = get_cpu_kernels()
    cases = []
    for name, m, k, n, layout in SHAPES:
        a, b = operands(m, k, n, layout)
        out_fo, out_mm = torch.empty(m, n), torch.empty(m, n)
        fo = lambda a=a, b=b, o=out_fo: kernels.matmul(a, b, None, o)  # noqa: E731
        mm = lambda a=a, b=b, o=out_mm: torch.mm(a, b, out=o)  # noqa: E731
        fo(), mm()  # warm-up
        cases.append({"name": name, "m": m, "k": k, "n": n, "fo": fo, "mm": mm, "t_fo": [], "t_mm": []})
    for i in range(rounds):
        for case in cases:  # alternate which goes first, so neither always follows the other
            order = ("fo", "mm") if i % 2 == 0 else ("mm", "fo")
            for which in order:
                case["t_" + which].append(time_once(case[which]))
    rows = []
    for case in cases:
        flops = 2 * case["m"] * case["k"] * case["n"]
        fo_s, mm_s = statistics.median(case["t_fo"]), statistics.median(case["t_mm"])
        rows.append(
            {
                "shape": f"{case['m']}×{case['k']}×{case['n']}",
                "name": case["name"],
                "fo_us": fo_s * 1e6,
                "mm_us": mm_s * 1e6,
                "fo_gflops": flops / fo_s / 1e9,
                "mm_gflops": flops / mm_s / 1e9,
                "ratio": fo_s / mm_s,
            }
        )
    return rows


def table(after: list[dict], before: list[dict] | None, isa: str, rounds: int) -> str:
    lines = [
        "# Fixed-order matrix product vs torch.mm",
        "",
        f"torch {torch.__version__}, {THREADS} intra-op threads, fixed-order kernels `{isa}`, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; medians of {rounds} "
        "interleaved rounds. Ratio = fixed-order time ÷ torch.mm time (MKL sgemm) on the same "
        "operand layouts.",
        "",
        "```bash",
        "python3 benchmarks/gemm_bench.py --json after.json --before before.json",
        "```",
        "",
    ]
    head = "| product | M×K×N | torch.mm µs | torch.mm GFLOP/s |"
    sep = "|---|---|---|---|"
    if before:
        head += " before µs | before GFLOP/s | before ratio |"
        sep += "---|---|---|"
    head += " after µs | after GFLOP/s | after ratio |"
    sep += "---|---|---|"
    lines += [head, sep]
    before_by = {(r["name"], r["shape"]): r for r in before or []}
    for r in after:
        row = f"| {r['name']} | {r['shape']} | {r['mm_us']:.0f} | {r['mm_gflops']:.0f} |"
        if before:
            b = before_by.get((r["name"], r["shape"]))
            row += (
                f" {b['fo_us']:.0f} | {b['fo_gflops']:.0f} | {b['ratio']:.2f}× |"
                if b
                else " – | – | – |"
            )
        row += f" {r['fo_us']:.0f} | {r['fo_gflops']:.0f} | **{r['ratio']:.2f}×** |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--json", type=Path, help="also write this run's numbers here")
    parser.add_argument("--before", type=Path, help="an earlier run's --json, shown as BEFORE")
    parser.add_argument("--no-write", action="store_true", help="print only, leave gemm.md")
    args = parser.parse_args()
    rows = run(args.rounds)
    before = json.loads(args.before.read_text()) if args.before else None
    text = table(rows, before, get_cpu_kernels().active_isa(), args.rounds)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
