"""Repro-safety: recorded per node, all-safe graphs run bit-identically on REPRO_OPS whatever the
thread count (and on the reference, the contract, as on the compiled kernels), and graphs with
unsafe nodes are refused for repro by name."""

import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import protocol.repro.functions
import protocol.repro.ops
from cli.model_cmd import export_training_graph
from protocol.errors import InvalidSpec
from protocol.onnx_model import check_repro_safe, load_onnx_model
from protocol.ops import NATIVE_OPS
from protocol.repro import reference
from protocol.repro.ops import REPRO_OPS
from tests.onnx_models.test_interpreter import make_batch, relative_error
from tests.onnx_models.test_refusals import make_model_bytes

# Error of REPRO_OPS against NATIVE_OPS, normalised by the native value's max: the output, and
# each gradient and running statistic (one run, output / worst gradient: gpt 2.3e-7 / 4.7e-7,
# resnet 2.8e-7 / 6.9e-7 with running statistics 1.2e-7, mlp 2.1e-7 / 2.1e-7).
OUTPUT_TOLERANCE, GRADIENT_TOLERANCE = 1e-5, 1e-4


def assert_gradients_close(repro: list[torch.Tensor], native: list[torch.Tensor]) -> None:
    """Each within GRADIENT_TOLERANCE of its own max; a gradient under 1% of the largest one's
    max is zero but for rounding (a Conv or Linear bias's before a batch norm: ~1e-7 of the
    largest, in either), and must differ by at most 1e-5 of the largest."""
    largest = max(b.abs().max().item() for b in native)
    for a, b in zip(repro, native, strict=True):
        difference, size = (a - b).abs().max().item(), b.abs().max().item()
        if size >= 0.01 * largest:
            assert difference <= GRADIENT_TOLERANCE * size
        else:
            assert difference <= 1e-5 * largest


def loss_of(factory: str, ops, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if factory == "mlp":  # a regression head
        return ops.mse_loss(output, targets)
    return ops.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))


def compute_output_and_gradients(
    factory: str, model, inputs, targets, ops, threads: int
) -> list[torch.Tensor]:
    """Output, every parameter gradient (in parameter order) and the updated buffers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = {n: v.clone().requires_grad_(True) for n, v in model.params.items()}
        output, buffers = model.forward_with_buffers(params, model.buffers, inputs, ops, None)
        grads = ops.gradients(loss_of(factory, ops, output, targets), list(params.values()))
        assert not any(value.requires_grad for value in buffers.values())  # state, not parameters
        return [output.detach(), *grads, *(buffers[name] for name in sorted(buffers))]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("factory", ["gpt", "resnet", "mlp"])
def test_all_safe_graph_is_bit_identical_on_repro_ops_across_threads(exported, factory):
    model = load_onnx_model(exported[factory].path.read_bytes())
    assert model.unsafe_steps == []
    check_repro_safe(model)  # does not raise
    inputs, targets = make_batch(factory)
    run = lambda ops, threads: compute_output_and_gradients(  # noqa: E731
        factory, model, inputs, targets, ops, threads
    )
    one, two, again = run(REPRO_OPS, 1), run(REPRO_OPS, 2), run(REPRO_OPS, 2)
    assert len(one) == 1 + len(model.params) + len(model.buffers)
    for a, b, c in zip(one, two, again, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)
    native = run(NATIVE_OPS, 2)
    assert relative_error(one[0], native[0]) <= OUTPUT_TOLERANCE  # the same model, in fixed order
    assert_gradients_close(one[1:], native[1:])
    assert not all(torch.equal(a, b) for a, b in zip(one, native, strict=True))


@pytest.mark.parametrize("factory", ["resnet", "mlp"])
def test_the_reference_gives_the_compiled_kernels_bits(exported, factory, monkeypatch):
    """Batch norm's channels-last rows, the pools' NCHW views, tanh and sigmoid: the compiled
    path computes exactly the contract (protocol/repro/reference.py), layouts included."""
    model = load_onnx_model(exported[factory].path.read_bytes())
    inputs, targets = make_batch(factory, seed=1)
    compiled = compute_output_and_gradients(factory, model, inputs, targets, REPRO_OPS, 2)
    for module in (protocol.repro.functions, protocol.repro.ops):
        monkeypatch.setattr(module, "get_backend", lambda device: reference)
    contract = compute_output_and_gradients(factory, model, inputs, targets, REPRO_OPS, 2)
    for a, b in zip(compiled, contract, strict=True):
        assert torch.equal(a, b)


class Recording(type(NATIVE_OPS)):
    def __init__(self):
        self.calls: list[str] = []

    def __getattribute__(self, name):
        if not name.startswith("_") and name != "calls":
            object.__getattribute__(self, "calls").append(name)
        return super().__getattribute__(name)


def test_repro_ops_are_the_ones_that_run(exported):
    """The fused steps and the layers must go through `ops`: a recording ops object sees them."""
    counts = {}
    for factory in ("gpt", "resnet", "mlp"):
        model, ops = load_onnx_model(exported[factory].path.read_bytes()), Recording()
        model.forward(model.params, {}, make_batch(factory)[0], ops, None)
        counts[factory] = {name: ops.calls.count(name) for name in set(ops.calls)}
    assert counts["gpt"] == {
        "causal_attention": 2,
        "linear": 9,
        "embedding": 2,
        "layer_norm": 5,
        "gelu": 2,
    }
    assert counts["resnet"] == {
        "conv2d": 3,
        "batch_norm": 3,
        "relu": 3,
        "global_avg_pool": 1,
        "linear": 1,
    }
    assert counts["mlp"] == {"linear": 3, "tanh": 1, "sigmoid": 1}


class PoolSoftmaxNet(nn.Module):
    """BatchNorm2d and BatchNorm1d, a non-overlapping AveragePool, Sigmoid, Tanh, and Softmax over
    the channels of an image and over the classes."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.bn1d = nn.Linear(4 * 4 * 4, 16), nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        h = torch.softmax(self.pool(torch.sigmoid(self.bn(self.conv(x)))), dim=1)
        h = torch.tanh(self.bn1d(self.fc1(torch.flatten(h, 1))))
        return torch.softmax(self.fc2(h), dim=1)


def test_average_pool_softmax_and_batch_norm_1d_are_safe_and_match_the_module():
    torch.manual_seed(5)
    net = PoolSoftmaxNet()
    blob, _ = export_training_graph(net, (6, 3, 8, 8), torch.float32)
    model = load_onnx_model(blob)
    assert {"AveragePool", "Softmax", "BatchNormalization"} <= set(model.op_counts)
    assert model.unsafe_steps == []
    x, targets = torch.randn(6, 3, 8, 8), torch.rand(6, 5)
    one = compute_output_and_gradients("mlp", model, x, targets, REPRO_OPS, 1)
    two = compute_output_and_gradients("mlp", model, x, targets, REPRO_OPS, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    module_out = net.train()(x)
    assert relative_error(one[0], module_out) <= OUTPUT_TOLERANCE
    torch.nn.functional.mse_loss(module_out, targets).backward()
    grads = dict(zip(model.params, one[1 : 1 + len(model.params)], strict=True))
    module_grads = dict(net.named_parameters())
    assert_gradients_close(list(grads.values()), [module_grads[n].grad for n in grads])


def pool_graph(node, out_shape: list[int]) -> bytes:
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    return make_model_bytes(graph)


@pytest.mark.parametrize(
    ("attrs", "safe"),
    [
        ({"kernel_shape": [2, 3], "strides": [2, 3]}, True),
        ({"kernel_shape": [2, 2], "strides": [3, 3]}, True),  # gaps between windows
        ({"kernel_shape": [3, 3], "strides": [1, 1]}, False),  # overlapping: gradient sums
        ({"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]}, False),
        ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, False),
    ],
)
def test_average_pool_is_safe_only_without_overlap_or_padding(attrs, safe):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", **attrs)
    pads, ceil = attrs.get("pads", [0, 0])[:2], bool(attrs.get("ceil_mode", 0))
    pooled = torch.nn.functional.avg_pool2d(
        torch.zeros(2, 3, 6, 6), attrs["kernel_shape"], attrs["strides"], pads, ceil
    )
    model = load_onnx_model(pool_graph(node, list(pooled.shape)))
    assert [step.name for step in model.unsafe_steps] == ([] if safe else ["pool"])
    x = torch.randn(2, 3, 6, 6)
    repro = model.forward(model.params, {}, x, REPRO_OPS, None)
    native = model.forward(model.params, {}, x, NATIVE_OPS, None)
    assert repro.shape == native.shape and relative_error(repro, native) <= OUTPUT_TOLERANCE


def test_inference_mode_batch_norm_is_not_repro_safe():
    """Normalising with the running statistics is torch's (MKL sqrt, torch-summed gradients)."""
    stats = [
        numpy_helper.from_array(torch.full((3,), value).numpy(), name)
        for name, value in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))
    ]
    node = helper.make_node(
        "BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], name="frozen_bn"
    )
    graph = helper.make_graph(
        [node],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
        stats,
    )
    model = load_onnx_model(make_model_bytes(graph))
    assert [step.name for step in model.unsafe_steps] == ["frozen_bn"]
    with pytest.raises(InvalidSpec, match="'frozen_bn' \\(BatchNormalization"):
        check_repro_safe(model)


def test_a_broadcast_add_of_trained_values_is_not_repro_safe():
    """Its backward sums over the batch with torch's thread-dependent order."""
    bias = numpy_helper.from_array(torch.zeros(3).numpy(), "bias")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"], name="add_bias")],
        "broadcast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [bias],
    )
    model = load_onnx_model(make_model_bytes(graph))
    assert [step.name for step in model.unsafe_steps] == ["add_bias"]
    with pytest.raises(InvalidSpec, match="'add_bias' \\(Add"):
        check_repro_safe(model)
    x = torch.randn(2, 3)
    assert torch.equal(model.forward(model.params, {}, x, NATIVE_OPS, None), x)
