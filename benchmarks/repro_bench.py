"""Repro-ops cost and convergence: writes benchmarks/results/repro.md.

Step ratio = median repro training step ÷ median native (torch defaults) step, both at 2 intra-op
threads in this process, interleaved so machine noise hits both. Per-op ratios time forward +
backward of the hot ops at the shapes gpt-tiny and cnn use.
"""

import statistics
import time
from pathlib import Path

import torch

from protocol.ops import NATIVE_OPS
from protocol.presets import example_job_spec
from protocol.repro import REPRO_OPS
from protocol.training import build_program

THREADS = 2
MODELS = ("mlp", "cnn", "gpt-tiny")
RESULTS = Path(__file__).parent / "results" / "repro.md"


def time_steps(model: str, rounds: int = 6, steps: int = 5) -> tuple[float, float]:
    program = build_program(example_job_spec(model, 40, "repro"))
    states = {}
    samples: dict[str, list[float]] = {"native": [], "repro": []}
    for ops in (NATIVE_OPS, REPRO_OPS):  # warm-up
        program.ops = ops
        states[ops.name] = program.step(program.initial_state())
    for _ in range(rounds):
        for ops in (NATIVE_OPS, REPRO_OPS):
            program.ops = ops
            start = time.perf_counter()
            for _ in range(steps):
                states[ops.name] = program.step(states[ops.name])
            samples[ops.name].append((time.perf_counter() - start) / steps)
    return statistics.median(samples["native"]), statistics.median(samples["repro"])


def time_op(fn, inputs, repeats: int = 7, backward: bool = True) -> float:
    def once() -> float:
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        start = time.perf_counter()
        out = fn(*leaves)
        if backward:
            torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.ones_like(out))
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def hot_ops() -> dict[str, tuple]:
    r = lambda *shape: torch.rand(shape) * 2 - 1  # noqa: E731
    targets = torch.randint(0, 128, (1024,))
    return {
        "linear 1024×64→256 (gpt fc1)": (lambda o, x, w, b: o.linear(x, w, b), [r(1024, 64), r(256, 64), r(256)]),
        "linear 1024×256→64 (gpt fc2)": (lambda o, x, w, b: o.linear(x, w, b), [r(1024, 256), r(64, 256), r(64)]),
        "causal_attention 32×4×32×16": (lambda o, q, k, v: o.causal_attention(q, k, v), [r(32, 4, 32, 16)] * 3),
        "layer_norm 32×32×64": (lambda o, x, w, b: o.layer_norm(x, w, b, 1e-5), [r(32, 32, 64), r(64), r(64)]),
        "gelu 32×32×256": (lambda o, x: o.gelu(x), [r(32, 32, 256)]),
        "cross_entropy 1024×128": (lambda o, x: o.cross_entropy(x, targets), [r(1024, 128)]),
        "conv2d 32×8×8×8→16 (cnn layer 2)": (lambda o, x, w, b: o.conv2d(x, w, b, 2, 1), [r(32, 8, 8, 8), r(16, 8, 3, 3), r(16)]),
        "embedding 32×32 of 128×64": (lambda o, w: o.embedding(targets.reshape(32, 32), w), [r(128, 64)]),
    }


def gemm_floor() -> tuple[float, float]:
    """Bare torch.mm time of gpt fc1's three products (forward, grad_x, grad_w) in float32 and in
    float64: the exact matmul's floor, before any slicing or rounding."""
    shapes = [((1024, 64), (64, 256)), ((1024, 256), (256, 64)), ((256, 1024), (1024, 64))]
    times = []
    for dtype in (torch.float32, torch.float64):
        pairs = [(torch.rand(a, dtype=dtype), torch.rand(b, dtype=dtype)) for a, b in shapes]
        times.append(time_op(lambda p=pairs: [torch.mm(a, b) for a, b in p], [], repeats=21, backward=False))
    return times[0], times[1]


def convergence(model: str, steps: int = 30) -> dict[str, float]:
    losses = {}
    for ops in (NATIVE_OPS, REPRO_OPS):
        program = build_program(example_job_spec(model, steps, "repro"))
        program.ops = ops
        state, trace = program.initial_state(), []
        for _ in range(steps):
            state, metrics = program.step_with_metrics(state)
            trace.append(metrics["loss"])
        losses[ops.name] = (trace[0], statistics.fmean(trace[-5:]))
    return losses


def main() -> None:
    torch.set_num_threads(THREADS)
    lines = ["# Repro ops: cost and convergence", "",
             f"torch {torch.__version__}, {THREADS} intra-op threads, CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}; `python3 benchmarks/repro_bench.py`. "
             "Native = `NativeOps` with torch defaults (MKL, oneDNN on). Shared 2-core machine: "
             "medians of interleaved runs.", "",
             "## Training step (repro ÷ native)", "", "| model | native ms | repro ms | ratio |", "|---|---|---|---|"]
    for model in MODELS:
        native, repro = time_steps(model)
        lines.append(f"| {model} | {native * 1e3:.2f} | {repro * 1e3:.2f} | {repro / native:.2f}× |")
    lines += ["", "## Hot ops, forward + backward (repro ÷ native)", "",
              "| op | native ms | repro ms | ratio |", "|---|---|---|---|"]
    for name, (fn, inputs) in hot_ops().items():
        native = time_op(lambda *a, fn=fn: fn(NATIVE_OPS, *a), inputs)
        repro = time_op(lambda *a, fn=fn: fn(REPRO_OPS, *a), inputs)
        lines.append(f"| {name} | {native * 1e3:.3f} | {repro * 1e3:.3f} | {repro / native:.2f}× |")
    single, double = gemm_floor()
    lines += ["", "## Floor: the fp64 GEMM alone (gpt fc1's forward, grad_x and grad_w products, bare torch.mm)", "",
              "| float32 ms | float64 ms | ratio |", "|---|---|---|",
              f"| {single * 1e3:.3f} | {double * 1e3:.3f} | {double / single:.2f}× |"]
    lines += ["", "## Convergence (30 steps, example specs; mean loss of the last 5 steps)", "",
              "| model | first loss native | first loss repro | late native | late repro |", "|---|---|---|---|---|"]
    for model in MODELS:
        result = convergence(model)
        (n0, n1), (r0, r1) = result["native"], result["repro"]
        lines.append(f"| {model} | {n0:.4f} | {r0:.4f} | {n1:.4f} | {r1:.4f} |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
