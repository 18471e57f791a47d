"""The three exported user modules as jobs, through the CLI a person uses: `job example --onnx`
writes the spec, `job run-local` trains it on the repro profile in every (threads, ISA) cell with
one trajectory root, the loss falls, `job replay` re-derives a segment, and the final state
carries the evaluation metrics (the ResNet's batch-norm statistics are state too)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from protocol.job_files import collect_job_files
from protocol.spec import parse_job_spec
from protocol.training import build_program
from sdk.state_files import read_state_file
from sdk.store import CheckpointStore
from tests.onnx_models import user_models
from tests.onnx_models.conftest import run_cli
from tests.repro.test_ops_matrix import matrix_cells

STEPS = 24


def token_corpus(path: Path) -> Path:
    """A learnable stream (a fixed cycle through the vocabulary) for the decoder."""
    vocab = user_models.GPT_VOCAB
    tokens = (torch.arange(3000) * 7 + torch.arange(3000) // 11) % vocab
    path.write_bytes(save({"tokens": tokens.to(torch.int64), "vocab_size": torch.tensor(vocab)}))
    return path


def write_spec(tmp_path: Path, graph: Path, extra: list[str]) -> Path:
    done = run_cli("job", "example", "--onnx", str(graph), "--steps", str(STEPS), *extra)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert spec["profile"] == {"kind": "repro"}  # every node of the three is repro-safe
    spec["optimizer"]["lr"] = 0.01
    if spec["dataset"]["kind"] == "synthetic-classification":
        spec["dataset"]["config"]["noise_percent"] = 20
    spec["checkpoint_interval"] = 8
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def run_local(spec: Path, files: list[Path], out: Path, threads: int, capability: str) -> dict:
    args = [a for f in files for a in ("--file", str(f))]
    done = run_cli(
        "job", "run-local", str(spec), *args, "--out", str(out), "--threads", str(threads),
        "--cpu-capability", capability, "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["gpt", "resnet", "mlp"])
def test_an_exported_module_trains_as_a_repro_job_with_one_root(factory, exported, tmp_path):
    graph = exported[factory].path
    dataset = [token_corpus(tmp_path / "corpus.safetensors")] if factory == "gpt" else []
    spec = write_spec(tmp_path, graph, ["--dataset", str(dataset[0])] if dataset else [])
    files = [graph, *dataset]
    roots = {}
    for threads, capability in matrix_cells():
        out = tmp_path / f"run-{threads}-{capability}"
        result = run_local(spec, files, out, threads, capability)
        roots[(threads, capability)] = (result["trajectory_root"], result["final_state_root"])
    assert len(roots) >= 4 and len(set(roots.values())) == 1, roots

    losses = json.loads((out / "losses.json").read_text())
    first, last = [losses[str(s)] for s in range(1, 9)], [losses[str(s)] for s in range(17, 25)]
    assert sum(last) < 0.8 * sum(first), losses

    replay = run_cli("job", "replay", str(out), "--segment", "2", "--threads", "1")
    assert replay.returncode == 0 and json.loads(replay.stdout)["match"], replay.stdout

    store = CheckpointStore.open(out)
    final = read_state_file(store.checkpoint_path(len(store.entries()) - 1))
    program = build_program(
        parse_job_spec(json.loads(spec.read_text())),
        collect_job_files(f.read_bytes() for f in files),
    )
    assert (
        program.evaluate(final)
        == {  # committed values: the final state's own evaluation
            name[len("metric/") :]: float(value)
            for name, value in final.items()
            if "metric/" in name
        }
    )
    assert float(final["metric/eval_loss"]) > 0 and 0 <= float(final["metric/eval_accuracy"]) <= 1
    buffers = sorted(name for name in final if name.startswith("buffer/"))
    assert len(buffers) == (6 if factory == "resnet" else 0)  # 3 batch norms × mean, variance
    start = program.initial_state()
    assert all(not torch.equal(final[name], start[name]) for name in buffers)  # they moved
