"""ONNX graphs at the coordinator (a real uvicorn server on loopback): an unusable graph is
refused at upload naming the node and operator (422, never a 500), a job whose graph was never
uploaded cannot be posted, a repro job over a graph with a node that is not repro-safe is
refused naming it, and the same graph on a pinned profile is accepted under the job id the
spec hashes to."""

import hashlib
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from protocol.presets import example_onnx_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import ProblemCode
from sdk.responses import CoordinatorError
from tests.coordinator.market import funded
from tests.coordinator.server import client_factory, running_server
from tests.onnx_models.test_refusals import make_model_bytes, memory_bomb, unsupported_op_bytes


def exp_head_bytes() -> bytes:
    """x (4, 3) → Gemm(W, b) → Exp: runs everywhere, but Exp is not repro-safe."""
    weight = numpy_helper.from_array(np.ones((2, 3), "float32"), "w")
    bias = numpy_helper.from_array(np.zeros(2, "float32"), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="head", transB=1),
            helper.make_node("Exp", ["h"], ["y"], name="squash"),
        ],
        "exp-head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
        [weight, bias],
    )
    return make_model_bytes(graph)


@pytest.fixture
def client(tmp_path):
    with running_server("sqlite", tmp_path) as server, client_factory(server.url) as make:
        yield funded(make)


def graph_spec(graph: bytes, profile: str) -> dict:
    return example_onnx_job_spec_json(
        hashlib.sha256(graph).hexdigest(), (4, 3), False, 2, steps=4, profile=profile
    )


def test_an_unsupported_operator_is_refused_at_upload_naming_it(client):
    with pytest.raises(CoordinatorError) as refused:
        client.upload_dataset(unsupported_op_bytes())
    assert refused.value.status == 422 and refused.value.problem_code is ProblemCode.INVALID_SPEC
    detail = refused.value.problem["detail"]
    assert "mystery_head" in detail and "Hardmax" in detail
    with pytest.raises(CoordinatorError) as garbage:
        client.upload_dataset(b"\x08\x07" + bytes(range(200)))
    assert garbage.value.status == 422


def test_repro_needs_every_node_repro_safe_and_pinned_takes_the_graph(client):
    graph = exp_head_bytes()
    with pytest.raises(CoordinatorError) as missing:
        client.submit_job(graph_spec(graph, "pinned"), 100, min_stake=24, verifier_fee=5)
    assert missing.value.status == 409 and "PUT /v1/datasets/" in missing.value.problem["detail"]
    client.upload_dataset(graph)
    with pytest.raises(CoordinatorError) as unsafe:
        client.submit_job(graph_spec(graph, "repro"), 100, min_stake=24, verifier_fee=5)
    assert unsafe.value.status == 422 and unsafe.value.problem.get("field") == "model.onnx"
    assert "'squash' (Exp" in unsafe.value.problem["detail"]
    spec = graph_spec(graph, "pinned")
    job = client.submit_job(spec, 100, min_stake=24, verifier_fee=5)
    assert job.job_id == compute_job_id(parse_job_spec(spec)).hex()
    assert json.loads(json.dumps(client.get_job(job.job_id).spec))["model"]["name"] == "onnx"


def test_a_tiny_graph_that_would_make_the_coordinator_allocate_gigabytes_is_refused(client):
    """16 bytes of shape asking for 2^32 floats: refused at upload by name, and the replica
    still answers."""
    with pytest.raises(CoordinatorError) as refused:
        client.upload_dataset(memory_bomb("constant-of-shape"))
    assert (
        refused.value.status == 422
        and "'bomb' (ConstantOfShape)" in refused.value.problem["detail"]
    )
    assert client.get_balance() > 0
