"""Fine-tuning from given weights (`model.weights`) and the verified evaluation split
(`evaluation.examples`): checkpoint 0 is exactly the file's weights, a bad weights file is refused
naming why, held-out examples are never trained on, and the final state's metrics equal an
independent computation on the held-out split."""

import hashlib

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save

from protocol.errors import InvalidSpec
from protocol.job_files import collect_job_files
from protocol.presets import example_job_spec_json
from protocol.rng import compute_batch_indices
from protocol.sampling import compute_segment_choice
from protocol.spec import get_job_file_hashes, parse_job_spec, spec_to_json
from protocol.state import compute_state_root, get_step
from protocol.training import build_program


def mlp_spec(steps: int = 4, **extra) -> dict:
    spec = example_job_spec_json("mlp", steps=steps)
    spec["model"]["config"] = {"hidden": [16], "dropout": 0.0}
    spec.update(extra)
    return spec


def weights_for(spec: dict, shift: float = 0.5) -> dict[str, torch.Tensor]:
    state = build_program(parse_job_spec(spec)).initial_state()
    return {k[len("param/") :]: v + shift for k, v in state.items() if k.startswith("param/")}


def with_weights(spec: dict, blob: bytes) -> dict:
    spec = {**spec, "model": {**spec["model"], "weights": hashlib.sha256(blob).hexdigest()}}
    return spec


def test_checkpoint_0_is_exactly_the_given_weights_with_fresh_optimizer_state():
    base = mlp_spec()
    weights = weights_for(base)
    blob = save(weights)
    spec = parse_job_spec(with_weights(base, blob))
    program = build_program(spec, collect_job_files([blob]))
    state = program.initial_state()
    assert all(torch.equal(state["param/" + n], w) for n, w in weights.items())
    assert all(not bool(v.any()) for k, v in state.items() if k.startswith("opt/"))
    seeded = build_program(parse_job_spec(base)).initial_state()
    assert compute_state_root(state) != compute_state_root(seeded)
    assert program.state_layout() == build_program(parse_job_spec(base)).state_layout()
    assert get_job_file_hashes(spec) == [spec.model.weights]
    # weights differ from the seed's by 0.5: the seed no longer decides checkpoint 0
    reseeded = parse_job_spec({**with_weights(base, blob), "seed": 7})
    again = build_program(reseeded, collect_job_files([blob])).initial_state()
    assert all(torch.equal(again["param/" + n], w) for n, w in weights.items())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w.pop("layers.0.weight"), "missing ['layers.0.weight']"),
        (lambda w: w.update(extra=torch.zeros(2)), "unknown ['extra']"),
        (lambda w: w.update({"layers.0.bias": torch.zeros(3)}), "'layers.0.bias' is"),
        (lambda w: w.update({"layers.0.bias": torch.zeros(16, dtype=torch.float64)}), "float64"),
        (lambda w: w["layers.1.bias"].fill_(float("nan")), "NaN"),
    ],
)
def test_a_weights_file_that_does_not_fit_the_model_is_refused_naming_why(change, message):
    base = mlp_spec()
    weights = weights_for(base)
    change(weights)
    blob = save(weights)
    with pytest.raises(InvalidSpec) as refused:
        build_program(parse_job_spec(with_weights(base, blob)), collect_job_files([blob]))
    assert refused.value.field == "model.weights" and message in str(refused.value)


def test_weights_are_needed_and_not_readable_bytes_are_refused():
    base = mlp_spec()
    with pytest.raises(InvalidSpec) as missing:
        build_program(parse_job_spec(with_weights(base, b"x" * 40)))
    assert missing.value.field == "model.weights"
    junk = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"
    with pytest.raises(InvalidSpec) as unreadable:
        build_program(parse_job_spec(with_weights(base, junk)), collect_job_files([junk]))
    assert "safetensors" in str(unreadable.value)


def test_old_specs_keep_their_encoding_and_job_id():
    spec = parse_job_spec(mlp_spec())
    encoded = spec_to_json(spec)
    assert "weights" not in encoded["model"] and "sha256" not in encoded["model"]
    assert "evaluation" not in encoded


@pytest.mark.parametrize(
    "evaluation, field",
    [
        ({"examples": 33}, "evaluation.examples"),  # not whole batches of 32
        ({"examples": 32 * 65}, "evaluation.examples"),  # over 64 batches
        ({"examples": 0}, "evaluation.examples"),
        ({"examples": 32, "extra": 1}, "evaluation.extra"),
    ],
)
def test_a_bad_evaluation_split_is_refused(evaluation, field):
    with pytest.raises(InvalidSpec) as refused:
        parse_job_spec(mlp_spec(evaluation=evaluation))
    assert refused.value.field == field


def test_the_final_state_commits_the_held_out_evaluation():
    spec = parse_job_spec(mlp_spec(steps=6, evaluation={"examples": 64}))
    program = build_program(spec)
    held = program.held_out
    assert program.dataset.size == 1024 - 64 and held.size == 64
    for step in range(6):  # training batches only ever index the training part
        indices = compute_batch_indices(spec.seed, step, program.dataset.size, spec.batch_size)
        assert int(indices.max()) < 1024 - 64
    state = program.initial_state()
    while get_step(state) < 6:
        assert float(state["metric/eval_loss"]) == 0.0  # zero until the final step
        state = program.step(state)
    hidden, classes = state["param/layers.0.weight"], state["param/layers.1.weight"]
    logits = F.linear(
        F.relu(F.linear(held.inputs, hidden, state["param/layers.0.bias"])),
        classes,
        state["param/layers.1.bias"],
    )
    losses = [F.cross_entropy(logits[i : i + 32], held.targets[i : i + 32]) for i in (0, 32)]
    assert float(state["metric/eval_loss"]) == pytest.approx(float(sum(losses) / 2), rel=1e-6)
    accuracy = float((logits.argmax(-1) == held.targets).float().mean())
    assert float(state["metric/eval_accuracy"]) == pytest.approx(accuracy, abs=1e-9)


def test_a_language_split_shares_no_token_with_training():
    spec = example_job_spec_json("gpt-tiny", steps=2)
    spec["evaluation"] = {"examples": 64}
    program = build_program(parse_job_spec(spec))
    train, held = program.dataset, program.held_out
    whole = build_program(parse_job_spec(example_job_spec_json("gpt-tiny", steps=2))).dataset
    assert train.inputs.numel() + held.inputs.numel() == whole.inputs.numel()  # a cut, no copy
    assert held.size == 64 and held.inputs.numel() == 64 + held.context
    last_trained = train.size - 1 + train.context  # the last token any training window reads
    assert last_trained == train.inputs.numel() - 1


@pytest.mark.parametrize("total, count", [(1, 1), (5, 1), (5, 3), (8, 8)])
def test_an_evaluated_job_always_audits_its_last_segment(total, count):
    for seed in range(20):
        picked = compute_segment_choice(bytes([seed]) * 32, total, count, audit_last=True)
        assert picked[-1] == total - 1 and len(set(picked)) == len(picked) == min(count, total)
    plain = {tuple(compute_segment_choice(bytes([s]) * 32, 5, 1)) for s in range(40)}
    assert len(plain) > 1  # without it the draw stays uniform over every segment


def test_a_diverged_models_metrics_are_one_nan_bit_pattern():
    """x86 makes negative NaNs, other hardware positive ones: the committed metric must not
    depend on whose hardware computed it."""
    spec = parse_job_spec(mlp_spec(steps=1, evaluation={"examples": 64}))
    program = build_program(spec)
    state = program.initial_state()
    negative_nan = torch.tensor(-float("nan"))
    state = {k: v * negative_nan if k.startswith("param/") else v for k, v in state.items()}
    final = program.step(state)
    bits = final["metric/eval_loss"].view(torch.int64).item()
    assert bits == 0x7FF8000000000000
