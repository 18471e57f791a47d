"""Token corpora: a language model trains on a user's safetensors file of token ids ('tokens'
int64 (N,), 'vocab_size' int64 scalar), referenced by SHA-256 like any dataset; malformed
corpora are refused naming what is wrong, never with a traceback."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import save

from protocol.data import compute_file_dataset
from protocol.errors import InvalidSpec
from protocol.job_files import collect_job_files
from protocol.presets import example_job_spec_json
from protocol.spec import parse_job_spec
from protocol.training import check_runnable_spec
from tests.test_cli_job import last_json, one_line_error, veritrain


def corpus(n: int = 600, vocab: int = 50, seed: int = 0) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n,), generator=generator)
    return save({"tokens": tokens, "vocab_size": torch.tensor(vocab)})


def corpus_spec(blob: bytes, context: int = 16, steps: int = 4) -> dict:
    spec = example_job_spec_json("gpt-tiny", steps)
    spec["dataset"] = {
        "kind": "safetensors",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "config": {"context": context},
    }
    spec["model"]["config"] = {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0}
    return spec


def test_a_token_corpus_trains_a_decoder_with_its_own_vocabulary():
    blob = corpus(vocab=50)
    program = check_runnable_spec(parse_job_spec(corpus_spec(blob)), collect_job_files([blob]))
    assert program.dataset.task == "language" and program.dataset.num_outputs == 50
    assert program.config["vocab"] == 50 and program.config["context"] == 16
    state = program.initial_state()
    assert state["param/tok_emb"].shape[0] == 50  # the embedding has the corpus's vocabulary
    losses = []
    for _ in range(3):
        state, metrics = program.step_with_metrics(state)
        losses.append(metrics["loss"])
    assert all(loss == loss and loss > 0 for loss in losses)  # finite, real losses


BAD_CORPORA = {
    "token out of range": {"tokens": torch.tensor([0, 1, 50]), "vocab_size": torch.tensor(50)},
    "negative token": {"tokens": torch.tensor([0, -1, 2]), "vocab_size": torch.tensor(50)},
    "float tokens": {"tokens": torch.tensor([0.0, 1.0, 2.0]), "vocab_size": torch.tensor(50)},
    "2-D tokens": {"tokens": torch.zeros(2, 3, dtype=torch.int64), "vocab_size": torch.tensor(5)},
    "no vocab_size": {"tokens": torch.tensor([0, 1, 2])},
    "vocab too small": {"tokens": torch.tensor([0, 0, 0]), "vocab_size": torch.tensor(1)},
    "vocab not scalar": {"tokens": torch.tensor([0, 1]), "vocab_size": torch.tensor([5])},
    "vocab huge": {"tokens": torch.tensor([0, 1]), "vocab_size": torch.tensor(2**40)},
    "no tokens": {"tokens": torch.zeros(0, dtype=torch.int64), "vocab_size": torch.tensor(5)},
    "extra tensor": {
        "tokens": torch.tensor([0, 1]),
        "vocab_size": torch.tensor(5),
        "inputs": torch.zeros(2, 2),
    },
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_a_malformed_corpus_is_refused_naming_why(case):
    with pytest.raises(InvalidSpec) as refused:
        compute_file_dataset(save(BAD_CORPORA[case]))
    assert refused.value.field == "dataset"


def test_a_context_the_corpus_cannot_fill_or_a_foreign_setting_is_refused():
    blob = corpus(n=20)
    with pytest.raises(InvalidSpec) as short:
        check_runnable_spec(
            parse_job_spec(corpus_spec(blob, context=32)), collect_job_files([blob])
        )
    assert short.value.field == "dataset.config.context"
    examples = save({"inputs": torch.rand(8, 4), "targets": torch.randint(0, 2, (8,))})
    spec = corpus_spec(examples)
    spec["model"] = example_job_spec_json("mlp")["model"]
    with pytest.raises(InvalidSpec) as foreign:  # only a token corpus takes a context
        check_runnable_spec(parse_job_spec(spec), collect_job_files([examples]))
    assert foreign.value.field.startswith("dataset.config")


def test_run_local_trains_a_corpus_job_and_its_loss_falls(tmp_path):
    """Through the CLI as a person would: the corpus file beside the spec."""
    pattern = torch.arange(40).repeat(30)  # a corpus a decoder can learn quickly
    blob = save({"tokens": pattern, "vocab_size": torch.tensor(40)})
    (tmp_path / "corpus.safetensors").write_bytes(blob)
    spec = corpus_spec(blob, context=8, steps=30)
    spec["checkpoint_interval"] = 10
    spec["optimizer"]["lr"] = 0.01
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = veritrain(
        "job",
        "run-local",
        tmp_path / "spec.json",
        "--out",
        tmp_path / "run",
        "--dataset",
        tmp_path / "corpus.safetensors",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert last_json(result.stdout)["checkpoints"] == 4
    losses = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert losses["30"] < 0.8 * losses["1"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(save(BAD_CORPORA["token out of range"]))
    spec["dataset"]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    one_line_error(
        veritrain(
            "job", "run-local", tmp_path / "bad.json", "--out", tmp_path / "bad", "--dataset", bad
        ),
        "vocab_size",
    )
