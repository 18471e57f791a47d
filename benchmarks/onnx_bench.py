"""A user's ≥ 25 M-parameter decoder as a repro job: writes benchmarks/results/onnx.md.

Run:  python3 benchmarks/onnx_bench.py          (about 10 minutes on 2 cores)

1. `benchmarks/decoder_module.py:decoder_25m` (33.7 M parameters) is exported with
   `veritrain model export` and trained for `STEPS` steps through `veritrain job run-local` on
   the repro profile (checkpoint every step), then `veritrain job replay` re-derives the last
   segment: the model trains, commits and replays through the CLI a person uses.
2. Step ratio, measured side by side in this process with torch's default threads: a repro
   training step of the exported graph (the program every solver runs: interpreter, fixed-order
   kernels, AdamW) ÷ an idiomatic PyTorch step of the same module (nn.Module, F.cross_entropy,
   torch.optim.AdamW with the job's hyper-parameters, MKL and oneDNN on), on the same batches.
   Rounds alternate the two, so machine noise hits both; the medians are compared.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decoder_module import CONTEXT, VOCAB, decoder_25m  # noqa: E402
from protocol.job_files import collect_job_files  # noqa: E402
from protocol.rng import compute_batch_indices  # noqa: E402
from protocol.spec import parse_job_spec  # noqa: E402
from protocol.state import PARAM_PREFIX, get_step  # noqa: E402
from protocol.training import build_program, compute_parameter_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "onnx.md"
BATCH, STEPS, ROUNDS, STEPS_PER_ROUND = 8, 2, 5, 2


def veritrain(*args) -> dict | None:
    command = [sys.executable, "-m", "cli.main", *map(str, args)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args[:2]))} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return {**result, "seconds": time.perf_counter() - started}


def prepare(work: Path) -> tuple[Path, Path, Path]:
    graph, corpus, spec_path = work / "decoder.onnx", work / "corpus.safetensors", work / "job.json"
    veritrain(
        "model", "export", "benchmarks/decoder_module.py:decoder_25m",
        "--input-shape", f"{BATCH},{CONTEXT}", "--input-dtype", "int64", "--out", graph,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (200_000,), generator=generator)
    corpus.write_bytes(save({"tokens": tokens, "vocab_size": torch.tensor(VOCAB)}))
    spec = json.loads(
        subprocess.run(
            [sys.executable, "-m", "cli.main", "job", "example", "--onnx", graph,
             "--dataset", corpus, "--steps", str(STEPS)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    spec.update(checkpoint_interval=1, evaluation=None)
    spec_path.write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))
    return graph, corpus, spec_path


def run_local(work: Path, graph: Path, corpus: Path, spec: Path) -> list[str]:
    out = work / "run"
    trained = veritrain("job", "run-local", spec, "--file", graph, "--file", corpus,
                        "--out", out, "--no-progress")  # fmt: skip
    replayed = veritrain("job", "replay", out, "--segment", STEPS - 1)
    if not replayed["match"]:
        raise SystemExit("the replay did not reproduce the committed root")
    state_mib = (out / "checkpoints" / f"{STEPS:06d}.safetensors").stat().st_size / 2**20
    return [
        f"- `job run-local`: {STEPS} steps, {STEPS + 1} checkpoints of {state_mib:.0f} MiB "
        f"(parameters and AdamW slots) in {trained['seconds']:.1f} s; trajectory root "
        f"`{trained['trajectory_root'][:16]}…`.",
        f"- `job replay --segment {STEPS - 1}`: recomputed root equals the committed one "
        f"(`match: true`) in {replayed['seconds']:.1f} s.",
    ]


def time_side_by_side(graph: Path, corpus: Path, spec_path: Path) -> tuple[list, list, int]:
    spec = parse_job_spec(json.loads(spec_path.read_text()))
    program = build_program(spec, collect_job_files([graph.read_bytes(), corpus.read_bytes()]))
    state = program.initial_state()
    module = decoder_25m().train()
    opt = spec.optimizer
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
        weight_decay=opt.weight_decay,
    )  # fmt: skip

    def torch_step(step: int) -> None:
        indices = compute_batch_indices(spec.seed, step, program.dataset.size, spec.batch_size)
        inputs, targets = program.dataset.get_batch(indices)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(inputs).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    repro, native, step = [], [], 0
    for _ in range(ROUNDS + 1):  # the first round warms both up and is dropped
        started = time.perf_counter()
        for _ in range(STEPS_PER_ROUND):
            state = program.step(state)
        repro.append((time.perf_counter() - started) / STEPS_PER_ROUND)
        started = time.perf_counter()
        for _ in range(STEPS_PER_ROUND):
            torch_step(step)
            step += 1
        native.append((time.perf_counter() - started) / STEPS_PER_ROUND)
    assert get_step(state) == (ROUNDS + 1) * STEPS_PER_ROUND
    assert sum(1 for k in state if k.startswith(PARAM_PREFIX)) == len(list(module.parameters()))
    return repro[1:], native[1:], compute_parameter_count(program)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="veritrain-onnx-bench-") as tmp:
        work = Path(tmp)
        graph, corpus, spec = prepare(work)
        cli_lines = run_local(work, graph, corpus, spec)
        repro, native, parameters = time_side_by_side(graph, corpus, spec)
    ratio = statistics.median(repro) / statistics.median(native)
    lines = [
        "# A user's decoder as a repro job (issue 12)",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads (torch's default), CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}; `python3 benchmarks/onnx_bench.py`.",
        f"Decoder `benchmarks/decoder_module.py:decoder_25m`: {parameters / 1e6:.1f} M parameters "
        f"(vocabulary {VOCAB}, context {CONTEXT}, width 512, 8 layers, 8 heads), batch {BATCH}, "
        "exported with `veritrain model export`.",
        "",
        "## Through the CLI",
        "",
        *cli_lines,
        "",
        "## Training step, side by side (target ≤ 1.3×)",
        "",
        "| step | median s | rounds (s) |",
        "|---|---|---|",
        f"| repro, exported graph (solver's program) | {statistics.median(repro):.3f} | "
        + ", ".join(f"{t:.3f}" for t in repro)
        + " |",
        f"| idiomatic torch (nn.Module + AdamW) | {statistics.median(native):.3f} | "
        + ", ".join(f"{t:.3f}" for t in native)
        + " |",
        "",
        f"**Ratio repro ÷ torch: {ratio:.2f}×** (medians of {ROUNDS} interleaved rounds of "
        f"{STEPS_PER_ROUND} steps each, after one warm-up round).",
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
