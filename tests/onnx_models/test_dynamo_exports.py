"""Graphs from torch's dynamo exporter (which `veritrain model export` does not use, see
docs/onnx.md) still load: its shape arithmetic folds, its attention fuses, and the BatchNorm trap
it sets is visible and refused by the export check."""

import logging
import warnings

import pytest
import torch

from cli.model_cmd import check_training_semantics, describe_model
from protocol.errors import InvalidInput
from protocol.onnx_model import load_onnx_model
from protocol.ops import NATIVE_OPS
from tests.onnx_models import user_models
from tests.onnx_models.test_interpreter import RELATIVE_TOLERANCE, make_batch, relative_error


def export_with_dynamo(module, example, optimize: bool = False) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # "torchvision is not installed" notices
        try:
            program = torch.onnx.export(
                module.train(),
                (example,),
                dynamo=True,
                optimize=optimize,
                training=torch.onnx.TrainingMode.TRAINING,
            )
        finally:
            logging.disable(logging.NOTSET)
    return program.model_proto.SerializeToString()


def test_a_dynamo_decoder_folds_fuses_and_matches_the_module():
    module = user_models.gpt()
    tokens, _ = make_batch("gpt")
    model = load_onnx_model(export_with_dynamo(module, tokens))
    ops = model.op_counts
    assert ops["CausalAttention"] == 2 and ops["Linear"] == 9
    assert not {"Shape", "CastLike", "Range", "Expand", "Where", "Softmax"} & set(ops)
    assert ops["SplitToSequence"] == 2  # the qkv split reads activations: a sequence value
    assert model.unsafe_steps == []
    output = model.forward(model.params, {}, tokens, NATIVE_OPS, None)
    assert relative_error(output, module.train()(tokens)) <= RELATIVE_TOLERANCE


def test_dynamo_writes_batch_norm_in_inference_form_and_export_refuses_it():
    module = user_models.resnet()
    images, _ = make_batch("resnet")
    blob = export_with_dynamo(module, images)
    model = load_onnx_model(blob)
    assert set(model.batch_norm_modes.values()) == {"inference"}  # even with TrainingMode.TRAINING
    assert model.buffer_updates == {}
    assert "3 BatchNormalization in inference mode" in describe_model("r.onnx", model)
    with pytest.raises(InvalidInput, match="kept 0 of 3 batch norms in training mode"):
        check_training_semantics(module, blob)


def test_dynamo_optimize_folds_batch_norm_away_and_export_refuses_it():
    module = user_models.resnet()
    blob = export_with_dynamo(module, make_batch("resnet")[0], optimize=True)
    model = load_onnx_model(blob)
    assert "BatchNormalization" not in model.op_counts and model.buffers == {}
    with pytest.raises(InvalidInput, match="kept 0 of 3 batch norms in training mode"):
        check_training_semantics(module, blob)
