"""The fixed-order matrix product against torch.mm (MKL sgemm) on the shapes a ~25M-parameter GPT
trains with: writes benchmarks/results/gemm.md.

Run:  python3 benchmarks/gemm_bench.py [--base-so OLD.so] [--threads 2,1] [--json after.json]

Each product is timed with the operands laid out as the repro training step passes them:
forward x·Wᵀ (B a transposed view of the row-major weight), grad_x = g·W (both row-major) and
grad_W = gᵀ·x (A a transposed view). 2 intra-op threads (`--threads 2,1` adds a 1-thread
table timed in process CPU time, which a shared machine's other load disturbs less), the
implementations interleaved round by round so machine noise hits all; medians. `--base-so` loads a second build of
`protocol.repro._fixed_order` (e.g. the base commit's, built in a scratch checkout) and times it in
the same rounds as BEFORE; `--before` instead takes the numbers of an earlier run's `--json`.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from protocol.repro.backend import get_cpu_kernels

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


def time_once(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def load_build(path: Path):
    """Another build of the extension, under a package of its own (its init symbol is fixed)."""
    sys.modules["vt_base_build"] = types.ModuleType("vt_base_build")
    spec = importlib.util.spec_from_file_location("vt_base_build._fixed_order", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(case: dict, which: str) -> dict:
    flops = 2 * case["m"] * case["k"] * case["n"]
    seconds, mm = statistics.median(case["t_" + which]), statistics.median(case["t_mm"])
    return {
        "shape": f"{case['m']}×{case['k']}×{case['n']}",
        "name": case["name"],
        "fo_us": seconds * 1e6,
        "mm_us": mm * 1e6,
        "fo_gflops": flops / seconds / 1e9,
        "mm_gflops": flops / mm / 1e9,
        "ratio": seconds / mm,
    }


def run(rounds: int, threads: int, base=None) -> tuple[list[dict], list[dict] | None]:
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    kernels = get_cpu_kernels()
    if base is not None:
        base.select_isa(kernels.active_isa())
    cases = []
    for name, m, k, n, layout in SHAPES:
        a, b = operands(m, k, n, layout)
        out = torch.empty(m, n)
        fns = {
            "fo": lambda a=a, b=b, out=out: kernels.matmul(a, b, None, out),
            "mm": lambda a=a, b=b, out=out: torch.mm(a, b, out=out),
        }
        if base is not None:
            fns["base"] = lambda a=a, b=b, out=out: base.matmul(a, b, None, out)
        for fn in fns.values():  # warm-up
            fn()
        cases.append(
            {"name": name, "m": m, "k": k, "n": n, "fns": fns} | {"t_" + w: [] for w in fns}
        )
    for i in range(rounds):
        for case in cases:  # rotate which goes first, so none always follows another
            order = list(case["fns"])
            order = order[i % len(order) :] + order[: i % len(order)]
            for which in order:
                case["t_" + which].append(time_once(case["fns"][which], clock))
    after = [summary(case, "fo") for case in cases]
    before = [summary(case, "base") for case in cases] if base is not None else None
    return after, before


def table(after: list[dict], before: list[dict] | None, threads: int) -> list[str]:
    clock = "process CPU time" if threads == 1 else "wall time"
    lines = [f"## {threads} thread{'s' if threads > 1 else ''} ({clock})", ""]
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
    return lines + [""]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} × {os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


def header(isa: str, rounds: int, command: str) -> list[str]:
    return [
        "# Fixed-order matrix product vs torch.mm",
        "",
        f"{cpu_model()}; torch {torch.__version__}, fixed-order kernels `{isa}`, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; medians of {rounds} interleaved rounds. "
        "Ratio = fixed-order time ÷ torch.mm time (MKL sgemm) on the same operand layouts; "
        "before = the build given by `--base-so`, timed in the same rounds.",
        "",
        "```bash",
        command,
        "```",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 2,1")
    parser.add_argument(
        "--base-so", type=Path, help="another build, timed in the same rounds as BEFORE"
    )
    parser.add_argument("--before", type=Path, help="an earlier run's --json, shown as BEFORE")
    parser.add_argument("--json", type=Path, help="also write this run's numbers here")
    parser.add_argument("--no-write", action="store_true", help="print only, leave gemm.md")
    args = parser.parse_args()
    base = load_build(args.base_so) if args.base_so else None
    saved = json.loads(args.before.read_text()) if args.before else {}
    command = "python3 benchmarks/gemm_bench.py --threads " + args.threads
    if args.base_so:
        command += " --base-so BASE/protocol/repro/_fixed_order.*.so"
    lines = header(get_cpu_kernels().active_isa(), args.rounds, command)
    results = {}
    for threads in (int(t) for t in args.threads.split(",")):
        after, before = run(args.rounds, threads, base)
        if str(threads) in saved:
            before = saved[str(threads)]["after"]
        results[str(threads)] = {"after": after, "before": before}
        lines += table(after, before, threads)
    text = "\n".join(lines)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
