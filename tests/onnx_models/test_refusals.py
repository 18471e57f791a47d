"""Graphs the interpreter cannot run exactly are refused with one line naming the node and the
operator (exit 2 from the CLI), never with a traceback."""

import random

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from protocol.errors import InvalidSpec
from protocol.onnx_model import load_onnx_model
from tests.onnx_models.conftest import USER_MODELS, run_cli

OPSET = 20


def make_model_bytes(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return model.SerializeToString()


def make_graph(nodes, inputs=None, initializers=()) -> onnx.GraphProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    return helper.make_graph(nodes, "refusal", inputs, [output], list(initializers))


def unsupported_op_bytes() -> bytes:
    return make_model_bytes(
        make_graph(
            [
                helper.make_node("Relu", ["x"], ["h"], name="fine"),
                helper.make_node("Hardmax", ["h"], ["y"], name="mystery_head"),
            ]
        )
    )


def mis_shaped_initializer_bytes(raw: bool) -> bytes:
    """A 3×3 weight carrying 7 floats (onnx.helper would refuse to build it: done by hand)."""
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 3])
    if raw:
        weight.raw_data = torch.zeros(7).numpy().tobytes()
    else:
        weight.float_data.extend([0.0] * 7)
    return make_model_bytes(
        make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], initializers=[weight]
        )
    )


def assert_refused(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_unsupported_operator_is_refused_naming_node_and_op(tmp_path):
    path = tmp_path / "hardmax.onnx"
    path.write_bytes(unsupported_op_bytes())
    assert_refused(run_cli("model", "check", str(path)), "'mystery_head'", "(Hardmax)")


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_malformed_files_are_refused(tmp_path, exported, damage):
    valid = exported["mlp"].path.read_bytes()
    blob = (
        random.Random(0).randbytes(len(valid)) if damage == "random" else valid[: len(valid) // 2]
    )
    path = tmp_path / f"{damage}.onnx"
    path.write_bytes(blob)
    assert_refused(run_cli("model", "check", str(path)), "model.onnx", "not a valid ONNX model")


@pytest.mark.parametrize("raw", [True, False])
def test_initializer_disagreeing_with_its_shape_is_refused(tmp_path, raw):
    path = tmp_path / "misshaped.onnx"
    path.write_bytes(mis_shaped_initializer_bytes(raw))
    assert_refused(run_cli("model", "check", str(path)), "'w'", "[3, 3]")


def test_check_accepts_an_export(exported):
    result = run_cli("model", "check", str(exported["gpt"].path))
    assert result.returncode == 0, result.stderr
    assert "repro-safe" in result.stdout and "CausalAttention 2" in result.stdout


def test_export_refuses_bad_factories_in_one_line(tmp_path):
    out = str(tmp_path / "x.onnx")
    base = ["model", "export", "--input-shape", "2,3", "--out", out]
    assert_refused(run_cli(*base, f"{USER_MODELS}:nowhere"), "no callable 'nowhere'")
    assert_refused(run_cli(*base, "no_such_file.py:f"), "no such file")
    assert_refused(run_cli(*base[:3], "2,x", *base[4:], f"{USER_MODELS}:mlp"), "--input-shape")


# --- the same refusals in process: the message names node and operator ------------------------


def test_dynamic_input_shape_is_refused():
    batch = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    blob = make_model_bytes(make_graph([helper.make_node("Relu", ["x"], ["y"])], inputs=[batch]))
    with pytest.raises(InvalidSpec, match="dynamic"):
        load_onnx_model(blob)


def test_unsupported_dtype_is_refused():
    half = helper.make_tensor("w", TensorProto.FLOAT16, [3], [0.0, 0.0, 0.0])
    blob = make_model_bytes(
        make_graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], initializers=[half])
    )
    with pytest.raises(InvalidSpec, match="initializer 'w' has dtype FLOAT16"):
        load_onnx_model(blob)


def test_dynamic_reshape_target_is_refused_naming_the_node():
    nodes = [
        helper.make_node("Cast", ["x"], ["shape"], to=TensorProto.INT64, name="cast"),
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_by_data"),
    ]
    with pytest.raises(InvalidSpec, match=r"'reshape_by_data' \(Reshape\).*must be a constant"):
        load_onnx_model(make_model_bytes(make_graph(nodes)))


def test_attributes_the_table_cannot_run_are_refused():
    weight = numpy_helper.from_array(torch.zeros(3, 3, 1, 1).numpy(), "w")
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="lopsided", pads=[0, 0, 1, 1])
    graph = helper.make_graph(
        [conv],
        "conv",
        [image],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        [weight],
    )
    with pytest.raises(InvalidSpec, match=r"'lopsided' \(Conv\): asymmetric padding"):
        load_onnx_model(make_model_bytes(graph))


def test_export_of_a_module_with_an_unsupported_op_is_refused(tmp_path):
    out = tmp_path / "cumsum.onnx"
    result = run_cli(
        "model",
        "export",
        f"{USER_MODELS}:running_total",
        "--input-shape",
        "2,12",
        "--out",
        str(out),
    )
    assert_refused(result, "(CumSum)", "operator not supported")
    assert not out.exists()


# --- a few bytes of file must not make a loader allocate gigabytes (the coordinator loads
# every uploaded graph) ---------------------------------------------------------------------


def _int64s(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(torch.tensor(values, dtype=torch.int64).numpy(), name)


def _constant(name: str, tensor: onnx.TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"make_{name}", value=tensor)


def memory_bomb(kind: str) -> bytes:
    """A tiny graph whose load-time folding or activations would need gigabytes."""
    if kind == "constant-of-shape":  # 2^32 floats from 16 bytes of shape
        nodes = [
            _constant("shape", _int64s("shape", [65536, 65536])),
            helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb"),
            helper.make_node("Relu", ["x"], ["y"], name="fine"),
        ]
    elif kind == "outer-product":  # two 8192-vectors of the file, their 2^26-value product
        column = numpy_helper.from_array(torch.ones(8192, 1).numpy(), "column")
        row = numpy_helper.from_array(torch.ones(1, 8192).numpy(), "row")
        nodes = [
            _constant("column", column),
            _constant("row", row),
            helper.make_node("MatMul", ["column", "row"], ["big"], name="bomb"),
            helper.make_node("Relu", ["x"], ["y"], name="fine"),
        ]
    elif kind == "range":
        nodes = [
            _constant("start", numpy_helper.from_array(torch.tensor(0).numpy(), "start")),
            _constant("limit", numpy_helper.from_array(torch.tensor(2**40).numpy(), "limit")),
            _constant("delta", numpy_helper.from_array(torch.tensor(1).numpy(), "delta")),
            helper.make_node("Range", ["start", "limit", "delta"], ["big"], name="bomb"),
            helper.make_node("Relu", ["x"], ["y"], name="fine"),
        ]
    else:  # an activation: every solver would allocate 2^33 floats per step
        nodes = [
            _constant("shape", _int64s("shape", [2**16, 2**15, 2, 3])),
            helper.make_node("Expand", ["x", "shape"], ["big"], name="bomb"),
            helper.make_node("Relu", ["big"], ["y"], name="fine"),
        ]
    return make_model_bytes(make_graph(nodes))


@pytest.mark.parametrize("kind", ["constant-of-shape", "outer-product", "range", "activation"])
def test_a_graph_that_would_allocate_gigabytes_is_refused_before_it_does(kind):
    blob = memory_bomb(kind)
    assert len(blob) < 70_000
    with pytest.raises(InvalidSpec) as refused:
        load_onnx_model(blob)
    assert "'bomb'" in str(refused.value) and "at most" in str(refused.value)


def test_a_graph_with_too_many_nodes_is_refused():
    nodes = [helper.make_node("Identity", ["x"], ["h0"], name="n0")]
    nodes += [helper.make_node("Identity", [f"h{i}"], [f"h{i + 1}"]) for i in range(20_000)]
    nodes.append(helper.make_node("Relu", ["h20000"], ["y"], name="last"))
    with pytest.raises(InvalidSpec, match="20002 nodes"):
        load_onnx_model(make_model_bytes(make_graph(nodes)))
