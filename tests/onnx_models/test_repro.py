"""Repro-safety: recorded per node, all-safe graphs run bit-identically on REPRO_OPS whatever the
thread count, and graphs with unsafe nodes are refused for repro by name."""

import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from protocol.errors import InvalidSpec
from protocol.onnx_model import check_repro_safe, load_onnx_model
from protocol.ops import NATIVE_OPS
from protocol.repro.ops import REPRO_OPS
from tests.onnx_models.test_interpreter import make_batch, relative_error
from tests.onnx_models.test_refusals import make_model_bytes


def compute_output_and_gradients(model, inputs, targets, ops, threads: int) -> list[torch.Tensor]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = {n: v.clone().requires_grad_(True) for n, v in model.params.items()}
        output = model.forward(params, {}, inputs, ops, None)
        loss = ops.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))
        grads = ops.gradients(loss, list(params.values()))
        return [output.detach(), *grads]
    finally:
        torch.set_num_threads(previous)


def test_all_safe_graph_is_bit_identical_on_repro_ops_across_threads(exported):
    model = load_onnx_model(exported["gpt"].path.read_bytes())
    assert model.unsafe_steps == []
    check_repro_safe(model)  # does not raise
    inputs, targets = make_batch("gpt")
    one = compute_output_and_gradients(model, inputs, targets, REPRO_OPS, threads=1)
    two = compute_output_and_gradients(model, inputs, targets, REPRO_OPS, threads=2)
    again = compute_output_and_gradients(model, inputs, targets, REPRO_OPS, threads=2)
    for a, b, c in zip(one, two, again, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)
    native = compute_output_and_gradients(model, inputs, targets, NATIVE_OPS, threads=2)
    assert relative_error(one[0], native[0]) <= 1e-5  # the same model, in fixed order
    assert not all(torch.equal(a, b) for a, b in zip(one, native, strict=True))


def test_repro_ops_are_the_ones_that_run(exported):
    """The fused steps must go through `ops`: a recording ops object sees every layer."""
    model = load_onnx_model(exported["gpt"].path.read_bytes())
    calls: list[str] = []

    class RecordingOps(type(NATIVE_OPS)):
        def __getattribute__(self, name):
            calls.append(name)
            return super().__getattribute__(name)

    model.forward(model.params, {}, make_batch("gpt")[0], RecordingOps(), None)
    assert calls.count("causal_attention") == 2 and calls.count("linear") == 9
    assert calls.count("embedding") == 2 and calls.count("layer_norm") == 5
    assert calls.count("gelu") == 2


@pytest.mark.parametrize(
    ("factory", "first_unsafe"),
    [("resnet", "BatchNormalization"), ("mlp", "Tanh")],
)
def test_unsafe_graphs_are_refused_for_repro_naming_the_node(exported, factory, first_unsafe):
    model = load_onnx_model(exported[factory].path.read_bytes())
    unsafe_ops = {step.op for step in model.unsafe_steps}
    assert first_unsafe in unsafe_ops
    assert {"Conv", "Relu", "MaxPool", "Gemm"}.isdisjoint(unsafe_ops)  # these go through ops
    with pytest.raises(InvalidSpec, match=f"'{model.unsafe_steps[0].name}' \\({first_unsafe}"):
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
    x = torch.randn(2, 3)
    assert torch.equal(model.forward(model.params, {}, x, NATIVE_OPS, None), x)
