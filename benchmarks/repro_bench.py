"""Repro-profile cost, accuracy and convergence: writes benchmarks/results/repro.md.

Run:  python3 benchmarks/repro_bench.py          (about 1 minute on 2 cores)

Step ratio = median repro training step ÷ median native (torch defaults: MKL, oneDNN) step, both at
2 intra-op threads in this process, interleaved so machine noise hits both. Models at the example
specs' sizes and at the larger sizes of the protocol benchmark. Per-op ratios time forward +
backward of the hot ops at gpt-tiny's and cnn's shapes.
"""

import statistics
import time
from pathlib import Path

import torch
from protocol_bench import BENCH_MODELS

from protocol.ops import NATIVE_OPS
from protocol.presets import example_job_spec, example_job_spec_json
from protocol.repro.backend import get_cpu_kernels
from protocol.repro.ops import REPRO_OPS
from protocol.rng import compute_batch_indices
from protocol.spec import parse_job_spec
from protocol.training import build_program

THREADS = 2
MODELS = ("mlp", "cnn", "gpt-tiny")
RESULTS = Path(__file__).parent / "results" / "repro.md"


def bench_spec(model: str, size: str):
    spec = example_job_spec_json(model, 40, "repro")
    if size == "bench":
        spec.update(BENCH_MODELS[model])
    return parse_job_spec(spec)


def time_steps(program, rounds: int = 7, steps: int = 5) -> dict[str, float]:
    """Median seconds per step for native and repro ops, interleaved."""
    states, samples = {}, {"native": [], "repro": []}
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
    return {name: statistics.median(values) for name, values in samples.items()}


def time_call(fn, repeats: int = 15) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_op(fn, inputs) -> float:
    def once() -> None:
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        out = fn(*leaves)
        torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.ones_like(out))

    return time_call(once)


def hot_ops() -> dict[str, tuple]:
    r = lambda *shape: torch.rand(shape) * 2 - 1  # noqa: E731
    targets = torch.randint(0, 128, (1024,))
    qkv = r(32, 32, 192)
    heads = lambda t: t.reshape(32, 32, 4, 16).transpose(1, 2)  # noqa: E731
    return {
        "linear 1024×64→256 (gpt fc1)": (
            lambda o, x, w, b: o.linear(x, w, b),
            [r(1024, 64), r(256, 64), r(256)],
        ),
        "linear 1024×256→64 (gpt fc2)": (
            lambda o, x, w, b: o.linear(x, w, b),
            [r(1024, 256), r(64, 256), r(64)],
        ),
        "causal_attention 32×4×32×16 (from qkv)": (
            lambda o, t: o.causal_attention(*(heads(p) for p in t.split(64, dim=-1))),
            [qkv],
        ),
        "layer_norm 32×32×64": (
            lambda o, x, w, b: o.layer_norm(x, w, b, 1e-5),
            [r(32, 32, 64), r(64), r(64)],
        ),
        "gelu 32×32×256": (lambda o, x: o.gelu(x), [r(32, 32, 256)]),
        "cross_entropy 1024×128": (lambda o, x: o.cross_entropy(x, targets), [r(1024, 128)]),
        "conv2d 32×8×8×8→16 (cnn layer 2)": (
            lambda o, x, w, b: o.conv2d(x, w, b, 2, 1),
            [r(32, 8, 8, 8), r(16, 8, 3, 3), r(16)],
        ),
        "embedding 32×32 of 128×64": (
            lambda o, w: o.embedding(targets.reshape(32, 32), w),
            [r(128, 64)],
        ),
    }


def time_adamw() -> tuple[float, float]:
    """One AdamW update of every gpt-tiny parameter (27 tensors, 105k values)."""
    program = build_program(example_job_spec("gpt-tiny", 40, "repro"))
    params = [t for k, t in program.initial_state().items() if k.startswith("param/")]
    slots = [(p, torch.rand_like(p), torch.rand_like(p), torch.rand_like(p)) for p in params]
    times = []
    for ops in (NATIVE_OPS, REPRO_OPS):
        times.append(
            time_call(
                lambda ops=ops: [
                    ops.adamw_update(p, g, m, v, 3, 1e-3, 0.9, 0.999, 1e-8, 0.01)
                    for p, g, m, v in slots
                ]
            )
        )
    return times[0], times[1]


GEMM_SHAPES = {
    "gpt fc1 forward 1024×64·64×256": ((1024, 64), (64, 256)),
    "gpt fc1 grad_x 1024×256·256×64": ((1024, 256), (256, 64)),
    "gpt fc1 grad_w 256×1024·1024×64": ((256, 1024), (1024, 64)),
}


def gemm_rows() -> list[str]:
    """The fixed-order matrix product alone against torch.mm (MKL sgemm), and its error against a
    float64 product of the same float32 inputs (max |error| ÷ max |exact|) beside torch's."""
    kernels, rows = get_cpu_kernels(), []
    for name, (a_shape, b_shape) in GEMM_SHAPES.items():
        a, b = torch.rand(a_shape) * 2 - 1, torch.rand(b_shape) * 2 - 1
        exact = a.double() @ b.double()
        scale = exact.abs().max().item()
        native_error = ((a @ b).double() - exact).abs().max().item() / scale
        repro_error = (kernels.matmul(a, b).double() - exact).abs().max().item() / scale
        native_t, repro_t = (
            time_call(lambda a=a, b=b: a @ b, 41),
            time_call(lambda a=a, b=b: kernels.matmul(a, b), 41),
        )
        rows.append(
            f"| {name} | {native_t * 1e6:.0f} | {repro_t * 1e6:.0f} | {repro_t / native_t:.2f}× "
            f"| {native_error:.1e} | {repro_error:.1e} |"
        )
    return rows


def isa_rows() -> list[str]:
    """Repro step time on each kernel code path this CPU runs (torch's own ISA unchanged)."""
    kernels, rows = get_cpu_kernels(), []
    active = kernels.active_isa()
    program = build_program(example_job_spec("gpt-tiny", 40, "repro"))
    state = program.step(program.initial_state())
    try:
        for isa in kernels.available_isas():
            kernels.select_isa(isa)
            seconds = time_call(lambda: program.step(state), 3 if isa == "scalar" else 9)
            rows.append(f"| {isa} | {seconds * 1e3:.1f} |")
    finally:
        kernels.select_isa(active)
    return rows


CONVERGENCE_STEPS = 300
EVAL_BATCHES = 16


def evaluate(program, state) -> tuple[float, float]:
    """(mean loss, accuracy) without dropout over EVAL_BATCHES fixed batches (far-off step numbers:
    the synthetic sets have no held-out split, so for mlp and cnn this is training-set accuracy;
    for gpt-tiny, next-token accuracy on the text)."""
    params = {k[len("param/") :]: v for k, v in state.items() if k.startswith("param/")}
    losses, hits, total = [], 0, 0
    with torch.no_grad():
        for batch in range(EVAL_BATCHES):
            step = 10**6 + batch
            losses.append(float(program.compute_loss(params, step, train=False)))
            indices = compute_batch_indices(
                program.spec.seed, step, program.dataset.size, program.spec.batch_size
            )
            inputs, targets = program.dataset.get_batch(indices)
            logits = program.model.forward(params, program.config, inputs, program.ops, None)
            hits += int((logits.argmax(-1) == targets).sum())
            total += targets.numel()
    return statistics.fmean(losses), hits / total


def convergence(model: str) -> dict[str, tuple[float, ...]]:
    """Per ops: (first loss, mean of the last 10 training losses, eval loss, eval accuracy), and the
    relative L2 distance between the two final parameter vectors."""
    results, finals = {}, {}
    for ops in (NATIVE_OPS, REPRO_OPS):
        program = build_program(example_job_spec(model, CONVERGENCE_STEPS, "repro"))
        program.ops = ops
        state, trace = program.initial_state(), []
        for _ in range(CONVERGENCE_STEPS):
            state, metrics = program.step_with_metrics(state)
            trace.append(metrics["loss"])
        results[ops.name] = (trace[0], statistics.fmean(trace[-10:]), *evaluate(program, state))
        finals[ops.name] = torch.cat(
            [v.flatten() for k, v in sorted(state.items()) if k.startswith("param/")]
        )
    distance = ((finals["repro"] - finals["native"]).norm() / finals["native"].norm()).item()
    return {**results, "distance": (distance,)}


def main() -> None:
    torch.set_num_threads(THREADS)
    kernels = get_cpu_kernels()
    lines = [
        "# Repro ops: cost, accuracy and convergence",
        "",
        f"torch {torch.__version__}, {THREADS} intra-op threads, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, fixed-order kernels `{kernels.active_isa()}`; "
        "`python3 benchmarks/repro_bench.py`. Native = `NativeOps` with torch defaults (MKL, oneDNN on). "
        "Shared 2-core machine: medians of interleaved runs.",
        "",
        "## Training step (repro ÷ native, target ≤ 1.3×)",
        "",
        "| model | size | native ms | repro ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for size in ("example", "bench"):
        for model in MODELS:
            t = time_steps(build_program(bench_spec(model, size)))
            lines.append(
                f"| {model} | {size} | {t['native'] * 1e3:.2f} | {t['repro'] * 1e3:.2f} "
                f"| **{t['repro'] / t['native']:.2f}×** |"
            )
    lines += [
        "",
        "Sizes: *example* = `veritrain job example --model NAME --profile repro`; *bench* = the "
        "protocol benchmark's (`benchmarks/protocol_bench.py` BENCH_MODELS: mlp 256→512→512→10 batch 256, "
        "cnn 32/64 channels on 3×32×32 batch 64, gpt-tiny d_model 128 context 64 batch 32).",
        "",
        "## Hot ops, forward + backward (repro ÷ native)",
        "",
        "| op | native ms | repro ms | ratio |",
        "|---|---|---|---|",
    ]
    for name, (fn, inputs) in hot_ops().items():
        native = time_op(lambda *a, fn=fn: fn(NATIVE_OPS, *a), inputs)
        repro = time_op(lambda *a, fn=fn: fn(REPRO_OPS, *a), inputs)
        lines.append(f"| {name} | {native * 1e3:.3f} | {repro * 1e3:.3f} | {repro / native:.2f}× |")
    native, repro = time_adamw()
    lines.append(
        f"| AdamW, all gpt-tiny parameters | {native * 1e3:.3f} | {repro * 1e3:.3f} | {repro / native:.2f}× |"
    )
    lines += [
        "",
        "## The matrix product alone (fixed-order kernel vs torch.mm = MKL sgemm)",
        "",
        "| product | MKL µs | fixed-order µs | ratio | MKL error | fixed-order error |",
        "|---|---|---|---|---|---|",
        *gemm_rows(),
        "",
        "Error: max |result − float64 product of the same inputs| ÷ max |float64 product|.",
        "",
        "## Kernel code paths (gpt-tiny example step, same bits on each)",
        "",
        "| kernels | repro ms |",
        "|---|---|",
        *isa_rows(),
        "",
        "`scalar` is what a CPU without AVX2 runs (torch capability `default`): its fused "
        "multiply-add is glibc's `fmaf`, a call per term.",
        "",
        f"## Convergence ({CONVERGENCE_STEPS} steps, example specs, same data order)",
        "",
        "| model | first loss native / repro | last-10 loss native / repro | eval loss native / repro "
        "| eval accuracy native / repro | final weights, relative distance |",
        "|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        r = convergence(model)
        (n0, n1, n2, n3), (r0, r1, r2, r3) = r["native"], r["repro"]
        lines.append(
            f"| {model} | {n0:.4f} / {r0:.4f} | {n1:.4f} / {r1:.4f} | {n2:.4f} / {r2:.4f} "
            f"| {n3:.1%} / {r3:.1%} | {r['distance'][0]:.1e} |"
        )
    lines += [
        "",
        f"Eval: {EVAL_BATCHES} batches without dropout at step numbers no training step uses; the "
        "synthetic sets have no held-out split, so mlp and cnn accuracy is on the training distribution, "
        "gpt-tiny's is next-token accuracy on the bundled text.",
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
