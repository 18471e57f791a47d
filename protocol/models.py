"""Model definitions for the registry's names (`protocol.registry`), as pure functions of a
parameter dict.

Every model is built from `ops` (native or repro) so one definition serves both profiles, and all
of its randomness comes in through generators derived from (seed, purpose, step).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from protocol.data import Dataset
from protocol.errors import InternalError, InvalidSpec
from protocol.registry import MODEL_NAMES
from protocol.rng import make_generator
from protocol.validation import get_int, get_int_list, get_probability, validate_keys

Params = dict[str, Tensor]
DropoutGenerator = Callable[[str], torch.Generator]  # layer name → generator for this step
CONFIG = "model.config"  # where a model's settings sit in a job spec (error fields name it)


def _linear_params(params: Params, name: str, init: Callable, *, fan_in: int, fan_out: int) -> None:
    params[f"{name}.weight"] = init(f"{name}.weight", (fan_out, fan_in), 1.0 / math.sqrt(fan_in))
    params[f"{name}.bias"] = init(f"{name}.bias", (fan_out,), 0.0)


@dataclass(frozen=True)
class ModelDef:
    resolve_config: Callable[[dict, Dataset], dict[str, Any]]
    init_params: Callable[[dict[str, Any], Callable], Params]
    forward: Callable[[Params, dict[str, Any], Tensor, Any, DropoutGenerator | None], Tensor]


# --- mlp ---------------------------------------------------------------------------------------


def _mlp_config(config: dict, dataset: Dataset) -> dict[str, Any]:
    validate_keys(config, CONFIG, optional={"hidden", "dropout"})
    if dataset.task == "language":
        raise InvalidSpec("mlp trains on classification or regression data", "dataset.kind")
    return {
        "inputs": math.prod(dataset.input_shape),
        "outputs": dataset.num_outputs,
        "hidden": get_int_list(
            config, "hidden", CONFIG, low=1, high=8192, max_items=8, default=[64, 64]
        ),
        "dropout": get_probability(config, "dropout", CONFIG, default=0.0),
    }


def _mlp_init(config: dict[str, Any], init: Callable) -> Params:
    params: Params = {}
    widths = [config["inputs"], *config["hidden"], config["outputs"]]
    for layer, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        _linear_params(params, f"layers.{layer}", init, fan_in=fan_in, fan_out=fan_out)
    return params


def _mlp_forward(
    params: Params, config: dict, x: Tensor, ops, dropout: DropoutGenerator | None
) -> Tensor:
    h = x.reshape(x.shape[0], -1)
    last = len(config["hidden"])
    for layer in range(last + 1):
        h = ops.linear(h, params[f"layers.{layer}.weight"], params[f"layers.{layer}.bias"])
        if layer < last:
            h = ops.relu(h)
            if dropout is not None and config["dropout"] > 0:
                h = ops.dropout(h, config["dropout"], dropout(f"layers.{layer}"))
    return h


# --- cnn ---------------------------------------------------------------------------------------


def _cnn_config(config: dict, dataset: Dataset) -> dict[str, Any]:
    validate_keys(config, CONFIG, optional={"channels"})
    if dataset.task != "classification" or len(dataset.input_shape) != 3:
        raise InvalidSpec(
            "cnn needs classification data of shape [channels, height, width]",
            "dataset.config.input_shape",
        )
    channels = get_int_list(
        config, "channels", CONFIG, low=1, high=1024, max_items=8, default=[8, 16]
    )
    in_channels, height, width = dataset.input_shape
    for _ in channels:  # each layer: 3x3 conv, stride 2, padding 1
        height, width = (height + 1) // 2, (width + 1) // 2
    return {
        "in_channels": in_channels,
        "channels": channels,
        "classes": dataset.num_outputs,
        "flat": channels[-1] * height * width,
    }


def _cnn_init(config: dict[str, Any], init: Callable) -> Params:
    params: Params = {}
    previous = config["in_channels"]
    for layer, width in enumerate(config["channels"]):
        fan_in = previous * 9
        params[f"conv.{layer}.weight"] = init(
            f"conv.{layer}.weight", (width, previous, 3, 3), 1.0 / math.sqrt(fan_in)
        )
        params[f"conv.{layer}.bias"] = init(f"conv.{layer}.bias", (width,), 0.0)
        previous = width
    _linear_params(params, "head", init, fan_in=config["flat"], fan_out=config["classes"])
    return params


def _cnn_forward(
    params: Params, config: dict, x: Tensor, ops, dropout: DropoutGenerator | None
) -> Tensor:
    h = x
    for layer in range(len(config["channels"])):
        h = ops.relu(
            ops.conv2d(h, params[f"conv.{layer}.weight"], params[f"conv.{layer}.bias"], 2, 1)
        )
    return ops.linear(h.reshape(h.shape[0], -1), params["head.weight"], params["head.bias"])


# --- gpt-tiny ----------------------------------------------------------------------------------


def _gpt_config(config: dict, dataset: Dataset) -> dict[str, Any]:
    validate_keys(config, CONFIG, optional={"d_model", "layers", "heads", "dropout"})
    if dataset.task != "language":
        raise InvalidSpec(
            "gpt-tiny trains on a language dataset: the bundled text or a token corpus",
            "dataset.kind",
        )
    d_model = get_int(config, "d_model", CONFIG, low=8, high=4096, default=64)
    heads = get_int(config, "heads", CONFIG, low=1, high=64, default=4)
    if d_model % heads:
        raise InvalidSpec("must divide d_model", f"{CONFIG}.heads")
    return {
        "vocab": dataset.num_outputs,
        "context": dataset.context,
        "d_model": d_model,
        "layers": get_int(config, "layers", CONFIG, low=1, high=48, default=2),
        "heads": heads,
        "dropout": get_probability(config, "dropout", CONFIG, default=0.1),
    }


def _gpt_init(config: dict[str, Any], init: Callable) -> Params:
    d, vocab = config["d_model"], config["vocab"]
    params: Params = {
        "tok_emb": init("tok_emb", (vocab, d), 0.035),
        "pos_emb": init("pos_emb", (config["context"], d), 0.035),
    }
    for i in range(config["layers"]):
        for norm in ("ln1", "ln2"):
            params[f"blocks.{i}.{norm}.weight"] = init(f"blocks.{i}.{norm}.weight", (d,), None)
            params[f"blocks.{i}.{norm}.bias"] = init(f"blocks.{i}.{norm}.bias", (d,), 0.0)
        _linear_params(params, f"blocks.{i}.qkv", init, fan_in=d, fan_out=3 * d)
        _linear_params(params, f"blocks.{i}.proj", init, fan_in=d, fan_out=d)
        _linear_params(params, f"blocks.{i}.fc1", init, fan_in=d, fan_out=4 * d)
        _linear_params(params, f"blocks.{i}.fc2", init, fan_in=4 * d, fan_out=d)
    params["ln_f.weight"] = init("ln_f.weight", (d,), None)
    params["ln_f.bias"] = init("ln_f.bias", (d,), 0.0)
    _linear_params(params, "head", init, fan_in=d, fan_out=vocab)
    return params


def _gpt_block(params: Params, config: dict, h: Tensor, *, layer: int, ops, dropout) -> Tensor:
    batch, length, d = h.shape
    heads, p = config["heads"], f"blocks.{layer}."
    x = ops.layer_norm(h, params[p + "ln1.weight"], params[p + "ln1.bias"], 1e-5)
    qkv = ops.linear(x, params[p + "qkv.weight"], params[p + "qkv.bias"])
    q, k, v = (
        t.reshape(batch, length, heads, d // heads).transpose(1, 2) for t in qkv.split(d, dim=-1)
    )
    attended = ops.causal_attention(q, k, v).transpose(1, 2).reshape(batch, length, d)
    out = ops.linear(attended, params[p + "proj.weight"], params[p + "proj.bias"])
    if dropout is not None and config["dropout"] > 0:
        out = ops.dropout(out, config["dropout"], dropout(p + "attn"))
    h = h + out
    x = ops.layer_norm(h, params[p + "ln2.weight"], params[p + "ln2.bias"], 1e-5)
    x = ops.linear(
        ops.gelu(ops.linear(x, params[p + "fc1.weight"], params[p + "fc1.bias"])),
        params[p + "fc2.weight"],
        params[p + "fc2.bias"],
    )
    if dropout is not None and config["dropout"] > 0:
        x = ops.dropout(x, config["dropout"], dropout(p + "mlp"))
    return h + x


def _gpt_forward(
    params: Params, config: dict, tokens: Tensor, ops, dropout: DropoutGenerator | None
) -> Tensor:
    # Positions per token, not broadcast over the batch: a broadcast add's backward reduces with
    # torch.sum, whose order depends on the thread count (the repro profile must avoid it).
    positions = torch.arange(tokens.shape[1]).expand(tokens.shape)
    h = ops.embedding(tokens, params["tok_emb"]) + ops.embedding(positions, params["pos_emb"])
    for i in range(config["layers"]):
        h = _gpt_block(params, config, h, layer=i, ops=ops, dropout=dropout)
    h = ops.layer_norm(h, params["ln_f.weight"], params["ln_f.bias"], 1e-5)
    return ops.linear(h, params["head.weight"], params["head.bias"])


_DEFINITIONS: dict[str, ModelDef] = {
    "mlp": ModelDef(_mlp_config, _mlp_init, _mlp_forward),
    "cnn": ModelDef(_cnn_config, _cnn_init, _cnn_forward),
    "gpt-tiny": ModelDef(_gpt_config, _gpt_init, _gpt_forward),
}


def compute_model_registry(definitions: dict[str, ModelDef]) -> dict[str, ModelDef]:
    """The definitions in the registry's order; every registered name needs exactly one."""
    if set(definitions) != set(MODEL_NAMES):
        raise InternalError(
            f"model definitions {sorted(definitions)} do not match the registry {sorted(MODEL_NAMES)}"
        )
    return {name: definitions[name] for name in MODEL_NAMES}


MODEL_REGISTRY: dict[str, ModelDef] = compute_model_registry(_DEFINITIONS)


def compute_initial_params(
    model: ModelDef, config: dict[str, Any], *, seed: int, ops, dtype: torch.dtype
) -> Params:
    """Weights U(±bound) from per-tensor generators; bound 0 → zeros, None → ones."""

    def init(name: str, shape: tuple[int, ...], bound: float | None) -> Tensor:
        if bound is None:
            return torch.ones(shape, dtype=dtype)
        if bound == 0.0:
            return torch.zeros(shape, dtype=dtype)
        return ops.uniform(shape, bound, make_generator(seed, "init", name), dtype)

    return model.init_params(config, init)
