"""Exported graphs run through the interpreter as their modules do: outputs, gradients, batch-norm
running statistics, and training that lowers the loss."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli.model_cmd import export_training_graph
from protocol.data import Dataset
from protocol.errors import InvalidInput, InvalidSpec
from protocol.onnx_model import OnnxModel, as_model_def, load_onnx_model
from protocol.ops import NATIVE_OPS
from protocol.rng import make_generator
from tests.onnx_models import user_models

RELATIVE_TOLERANCE = 1e-5
SHAPE_OPS = {"Shape", "Constant", "Expand", "Range", "Where", "Equal", "Trilu", "CastLike"}


def make_batch(factory: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if factory == "gpt":
        shape = (user_models.GPT_BATCH, user_models.GPT_CONTEXT)
        tokens = torch.randint(0, user_models.GPT_VOCAB, shape, generator=generator)
        return tokens, torch.randint(0, user_models.GPT_VOCAB, shape, generator=generator)
    if factory == "resnet":
        images = torch.randn(user_models.CNN_BATCH, *user_models.CNN_SHAPE, generator=generator)
        labels = torch.randint(
            0, user_models.CNN_CLASSES, (user_models.CNN_BATCH,), generator=generator
        )
        return images, labels
    inputs = torch.randn(user_models.MLP_BATCH, user_models.MLP_INPUTS, generator=generator)
    return inputs, torch.randn(user_models.MLP_BATCH, user_models.MLP_OUTPUTS, generator=generator)


def compute_loss(factory: str, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if factory == "mlp":
        return F.mse_loss(output, targets)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max())


def load(exported, factory: str) -> OnnxModel:
    return load_onnx_model(exported[factory].path.read_bytes())


def trained_params(model: OnnxModel) -> dict[str, torch.Tensor]:
    return {name: value.clone().requires_grad_(True) for name, value in model.params.items()}


@pytest.mark.parametrize("factory", ["gpt", "resnet", "mlp"])
def test_forward_and_gradients_match_the_module(exported, factory):
    model = load(exported, factory)
    module = getattr(user_models, factory)().train()
    inputs, targets = make_batch(factory)
    params = trained_params(model)
    output = model.forward(params, {}, inputs, NATIVE_OPS, None)
    expected = module(inputs)
    assert output.shape == expected.shape
    assert relative_error(output, expected) <= RELATIVE_TOLERANCE
    compute_loss(factory, output, targets).backward()
    compute_loss(factory, expected, targets).backward()
    module_params = dict(module.named_parameters())
    assert set(params) == set(module_params)  # initializers are named as in the module
    for name, param in params.items():
        assert relative_error(param.grad, module_params[name].grad) <= 1e-4, name


def test_batch_norm_running_statistics_are_buffers_updated_as_torch_does(exported):
    model = load(exported, "resnet")
    module = user_models.resnet().train()
    assert set(model.buffers) == {name for name, _ in module.named_buffers() if "running" in name}
    assert not set(model.buffers) & set(model.params)
    for name, value in module.named_buffers():  # the file holds the pre-export state
        if name in model.buffers:
            assert torch.equal(model.buffers[name], value), name
    inputs, _ = make_batch("resnet")
    _, updated = model.forward_with_buffers(model.params, model.buffers, inputs, NATIVE_OPS, None)
    module(inputs)
    for name, value in module.named_buffers():
        if name in updated:
            torch.testing.assert_close(updated[name], value, rtol=1e-5, atol=1e-6)
            assert not torch.equal(updated[name], model.buffers[name]), name


@pytest.mark.parametrize("factory", ["gpt", "resnet", "mlp"])
def test_training_through_the_interpreter_lowers_the_loss(exported, factory):
    model = load(exported, factory)
    params, buffers = trained_params(model), dict(model.buffers)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    inputs, targets = make_batch(factory, seed=1)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        output, buffers = model.forward_with_buffers(params, buffers, inputs, NATIVE_OPS, None)
        loss = compute_loss(factory, output, targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("factory", ["gpt", "resnet", "mlp"])
def test_exports_are_folded_and_fused(exported, factory):
    model = load(exported, factory)
    assert not {step.op for step in model.steps} & SHAPE_OPS
    assert model.parameter_count == sum(
        p.numel() for p in getattr(user_models, factory)().parameters()
    )
    line = exported[factory].stdout
    assert f"{model.parameter_count} parameters" in line and line.count("\n") == 1
    if factory == "gpt":
        assert model.op_counts["CausalAttention"] == 2
        assert model.op_counts["Linear"] == 9  # 4 per block + head: none left as MatMul
        assert "MatMul" not in model.op_counts and "Softmax" not in model.op_counts
    if factory == "resnet":
        assert set(model.batch_norm_modes.values()) == {"training"}
        assert "3 BatchNormalization in training mode" in line


def test_dropout_draws_its_mask_from_the_step_generator():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))
    blob, kept = export_training_graph(net, (4, 6), torch.float32)
    assert "1 Dropout" in kept
    model = load_onnx_model(blob)
    assert model.op_counts["Dropout"] == 1 and model.unsafe_steps == []
    x = torch.randn(4, 6)

    def run(seed):
        generators = None if seed is None else (lambda layer: make_generator(seed, "d", layer))
        return model.forward(model.params, {}, x, NATIVE_OPS, generators)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert relative_error(run(None), net.eval()(x)) <= RELATIVE_TOLERANCE  # no generator: off


def test_model_def_checks_the_dataset_against_the_graph(exported):
    model = load(exported, "gpt")
    model_def = as_model_def(model)
    stream = torch.zeros(200, dtype=torch.int64)
    text = Dataset("language", stream, stream, user_models.GPT_VOCAB, user_models.GPT_CONTEXT)
    config = model_def.resolve_config({}, text)
    assert config == {"batch_size": user_models.GPT_BATCH}  # shapes are static: the job's batch
    params = model_def.init_params(config, None)
    assert params.keys() == model.params.keys() and params is not model.params
    tokens, targets = make_batch("gpt")
    logits = model_def.forward(params, config, tokens, NATIVE_OPS, None)
    assert logits.shape == (*tokens.shape, user_models.GPT_VOCAB)
    with pytest.raises(InvalidSpec, match="takes no settings"):
        model_def.resolve_config({"layers": 2}, text)
    short = Dataset("language", stream, stream, user_models.GPT_VOCAB, user_models.GPT_CONTEXT - 1)
    with pytest.raises(InvalidSpec, match="examples are"):
        model_def.resolve_config({}, short)
    with pytest.raises(InvalidInput, match="inputs"):
        model_def.forward(params, config, tokens[:, :-1], NATIVE_OPS, None)
