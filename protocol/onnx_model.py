"""A user's ONNX training graph as a model (issue 12): bytes in, a `ModelDef`-compatible object out.

`load_onnx_model(blob)` parses with `onnx.load_model_from_string` (which executes nothing),
validates every node against `protocol.onnx.table.SUPPORTED_OPS`, and plans the interpretation:

- float32 initializers become parameters, named as in the graph; a training-mode
  BatchNormalization's running mean and variance are *buffers* instead (state that is updated,
  not trained): `forward_with_buffers` returns their new values, `forward` ignores them (a
  training-mode batch norm normalises with the batch's own statistics);
- shapes are static (every graph input dimension is fixed), so a load-time trace on meta tensors
  gives every value's shape, and every node computed from constants alone (Shape, Range, Expand of
  constants, casts, causal masks …) is evaluated once and becomes a constant;
- `protocol.onnx.patterns` fuses the exporter's Linear and causal-attention subgraphs back into
  `ops.linear` / `ops.causal_attention`; every other node runs through its table entry.

Anything it cannot run exactly is refused with one `InvalidSpec` naming the node and operator.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

from protocol.errors import InvalidInput, InvalidSpec
from protocol.models import ModelDef
from protocol.onnx.patterns import find_fusions
from protocol.onnx.table import (
    MAX_FOLDED_ELEMENTS,
    ONNX_DTYPES,
    ONNX_FIELD,
    SUPPORTED_OPS,
    NodeView,
    RunContext,
    Step,
)
from protocol.ops import NATIVE_OPS

MIN_OPSET, MAX_OPSET = 13, 22  # the default-domain opsets whose semantics the table follows
MAX_NODES = 20_000  # a 33 M-parameter decoder exports ~600: bounds the load-time trace's work
# Any value the graph computes: what one activation may make every solver allocate.
MAX_VALUE_ELEMENTS = 2**30
MAX_FOLDED_TOTAL = 4 * MAX_FOLDED_ELEMENTS  # all load-time constants together
INPUT_DTYPES = (torch.float32, torch.int64)
# Inputs whose metadata alone a node reads (shapes are fixed, dtypes known at load): such a node
# is constant when its other inputs are, e.g. CastLike(constant, activation) in dynamo's exports.
METADATA_INPUTS = {"Shape": {0}, "CastLike": {1}}


def _refuse(message: str) -> InvalidSpec:
    return InvalidSpec(message, ONNX_FIELD)


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class OnnxModel:
    input: GraphInput
    output: str
    output_shape: tuple[int, ...]
    params: dict[str, Tensor]  # trained: the graph's float32 initializers
    buffers: dict[str, Tensor]  # updated, not trained: batch-norm running statistics
    buffer_updates: dict[str, str]  # graph value → the buffer it becomes after a step
    constants: dict[str, Tensor]  # folded values the steps read
    steps: tuple[Step, ...]
    # batch-norm node → "training" | "inference" (what the exporter kept)
    batch_norm_modes: dict[str, str] = field(default_factory=dict)

    # --- the ModelDef interface (protocol.models) -----------------------------------------------
    def resolve_config(self, config: dict, dataset: Any) -> dict[str, Any]:
        return compute_onnx_config(self, config, dataset)

    def init_params(self, _config: dict[str, Any], _init: Any) -> dict[str, Tensor]:
        """The graph's own initial weights (the file is the initialisation)."""
        return {name: value.clone() for name, value in self.params.items()}

    def forward(self, params, _config, inputs: Tensor, ops, dropout) -> Tensor:
        return self.forward_with_buffers(params, self.buffers, inputs, ops, dropout)[0]

    def forward_with_buffers(
        self, params, buffers, inputs: Tensor, ops, dropout, training: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The output and the buffers' values after this forward pass (detached). Not
        `training`: batch norms normalise with their running statistics and keep them."""
        self._check_call(params, buffers, inputs)
        env = {**self.constants, **buffers, **params, self.input.name: inputs}
        context = RunContext(ops, dropout, training)
        for step in self.steps:
            values = step.kernel([env[name] if name else None for name in step.inputs], context)
            env.update(
                (name, value) for name, value in zip(step.outputs, values, strict=False) if name
            )
        updated = {buffer: env[value].detach() for value, buffer in self.buffer_updates.items()}
        return env[self.output], updated

    def _check_call(self, params, buffers, inputs: Tensor) -> None:
        for given, wanted, what in (
            (params, self.params, "params"),
            (buffers, self.buffers, "buffers"),
        ):
            if set(given) != set(wanted):
                missing, extra = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
                raise InvalidInput(f"missing {missing}, unknown {extra}", what)
        if tuple(inputs.shape) != self.input.shape or inputs.dtype != self.input.dtype:
            raise InvalidInput(
                f"input must be {self.input.dtype} of shape {list(self.input.shape)}, got "
                f"{inputs.dtype} {list(inputs.shape)}",
                "inputs",
            )

    # --- summaries -------------------------------------------------------------------------------
    @property
    def parameter_count(self) -> int:
        return sum(value.numel() for value in self.params.values())

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(Counter(step.op for step in self.steps))

    @property
    def unsafe_steps(self) -> list[Step]:
        """Steps whose bits may depend on threads or ISA: a repro job must refuse these."""
        return [step for step in self.steps if not step.repro_safe]


def as_model_def(model: OnnxModel) -> ModelDef:
    return ModelDef(model.resolve_config, model.init_params, model.forward)


def check_repro_safe(model: OnnxModel) -> None:
    """Refuse a graph for the repro profile, naming its first non-repro-safe node."""
    unsafe = model.unsafe_steps
    if unsafe:
        first = unsafe[0]
        raise _refuse(
            f"node '{first.name}' ({first.op}, runs as {first.runs_as}) is not repro-safe"
            f" ({len(unsafe)} such node(s)); the repro profile needs fixed-order kernels"
        )


def compute_onnx_config(model: OnnxModel, config: dict, dataset: Any) -> dict[str, Any]:
    """The graph fixes the batch size and the example shape; the dataset must agree."""
    if config:
        raise InvalidSpec(f"an ONNX model takes no settings, got {sorted(config)}", "model.config")
    batch, *example = model.input.shape
    wanted = [dataset.context] if dataset.task == "language" else list(dataset.input_shape)
    if example != wanted:
        raise InvalidSpec(
            f"the graph's examples are {example}, the dataset's {wanted}", "dataset.config"
        )
    if model.output_shape[-1] != dataset.num_outputs:
        raise InvalidSpec(
            f"the graph has {model.output_shape[-1]} outputs, the dataset {dataset.num_outputs}",
            "dataset.config",
        )
    return {"batch_size": batch}


# --- loading -----------------------------------------------------------------------------------


def load_onnx_model(blob: bytes) -> OnnxModel:
    """Parse, validate and plan a graph; raises InvalidSpec naming the node and operator."""
    analysis = analyse_onnx_graph(blob)
    steps = _plan_steps(analysis)
    needed = {name for step in steps for name in step.inputs}
    return OnnxModel(
        input=analysis.input,
        output=analysis.output,
        output_shape=analysis.shapes[analysis.output],
        params=analysis.params,
        buffers=analysis.buffers,
        buffer_updates=analysis.buffer_updates,
        constants={k: v for k, v in analysis.statics.items() if k in needed},
        steps=tuple(steps),
        batch_norm_modes=analysis.batch_norm_modes,
    )


@dataclass
class GraphAnalysis:
    proto: onnx.ModelProto
    input: GraphInput
    output: str
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    buffer_updates: dict[str, str]
    statics: dict[str, Tensor]  # constants and everything folded from them
    shapes: dict[str, tuple[int, ...]]
    dynamic: list[NodeView]  # nodes that depend on the input or the trained state
    batch_norm_modes: dict[str, str]


def analyse_onnx_graph(blob: bytes) -> GraphAnalysis:
    proto = _parse(blob)
    graph = proto.graph
    initializers = _read_initializers(graph)
    _check_structure(proto)
    buffers, buffer_updates, modes = _find_batch_norm_state(graph, initializers)
    params = {
        name: value
        for name, value in initializers.items()
        if value.is_floating_point() and name not in buffers
    }
    constants = {n: v for n, v in initializers.items() if not v.is_floating_point()}
    graph_input = _read_input(graph, initializers)
    output = _read_output(graph)
    analysis = GraphAnalysis(
        proto,
        graph_input,
        output,
        params,
        {n: initializers[n] for n in buffers},
        buffer_updates,
        constants,
        {},
        [],
        modes,
    )
    _trace(analysis)
    if analysis.output in analysis.statics:
        raise _refuse(f"output '{output}' does not depend on the input")
    return analysis


def _parse(blob: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(blob)
    except Exception as err:  # noqa: BLE001 — protobuf raises many types
        raise _refuse(f"not a valid ONNX model ({_first_line(err)})") from err


def _check_structure(proto: onnx.ModelProto) -> None:
    """onnx's own checker (after the initializers, whose refusals name the tensor), then ours."""
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # noqa: BLE001 — the checker raises several types
        raise _refuse(f"not a valid ONNX model ({_first_line(err)})") from err
    if not proto.graph.node:
        raise _refuse("not a valid ONNX model (the graph has no nodes)")
    if len(proto.graph.node) > MAX_NODES:
        raise _refuse(f"the graph has {len(proto.graph.node)} nodes (at most {MAX_NODES})")
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    version = opsets.get("ai.onnx")
    if version is None or not MIN_OPSET <= version <= MAX_OPSET:
        raise _refuse(f"opset {version} is not supported (need {MIN_OPSET}–{MAX_OPSET})")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _read_initializers(graph: onnx.GraphProto) -> dict[str, Tensor]:
    values: dict[str, Tensor] = {}
    for tensor in graph.initializer:
        values[tensor.name] = _tensor_from_proto(tensor, f"initializer '{tensor.name}'")
    return values


def _tensor_from_proto(tensor: onnx.TensorProto, what: str) -> Tensor:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise _refuse(f"{what} keeps its data in an external file (not supported)")
    dtype = ONNX_DTYPES.get(tensor.data_type)
    if dtype is None:
        name = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise _refuse(f"{what} has dtype {name}, not one of float32, int32, int64, bool")
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as err:  # noqa: BLE001 — numpy raises ValueError; protobuf others
        raise _refuse(f"{what}: its data does not match its shape {list(tensor.dims)}") from err
    if list(array.shape) != list(tensor.dims):
        raise _refuse(f"{what}: its data does not match its shape {list(tensor.dims)}")
    return torch.from_numpy(array.copy()).to(dtype)


def _find_batch_norm_state(
    graph: onnx.GraphProto, initializers: dict[str, Tensor]
) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """Running mean and variance of batch norms (inputs 3, 4): buffers, and which outputs
    (training mode: 1, 2) carry their updated values."""
    buffers: set[str] = set()
    updates: dict[str, str] = {}
    modes: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        modes[node.name] = "training" if training else "inference"
        for slot in (3, 4):
            name = node.input[slot] if len(node.input) > slot else ""
            if name in initializers:
                buffers.add(name)
                if training and len(node.output) > slot - 2 and node.output[slot - 2]:
                    updates[node.output[slot - 2]] = name
    return buffers, updates, modes


def _read_input(graph: onnx.GraphProto, initializers: dict[str, Tensor]) -> GraphInput:
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise _refuse(f"the graph must take exactly one input, it takes {len(inputs)}")
    value = inputs[0]
    tensor_type = value.type.tensor_type
    dtype = ONNX_DTYPES.get(tensor_type.elem_type)
    if dtype not in INPUT_DTYPES:
        raise _refuse(f"input '{value.name}' must be float32 or int64")
    dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else []
    if not dims or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
        raise _refuse(
            f"input '{value.name}' has a dynamic or unknown shape (export with fixed shapes)"
        )
    return GraphInput(value.name, tuple(d.dim_value for d in dims), dtype)


def _read_output(graph: onnx.GraphProto) -> str:
    if len(graph.output) != 1:
        raise _refuse(f"the graph must have exactly one output, it has {len(graph.output)}")
    return graph.output[0].name


def _read_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            attrs[attribute.name] = _tensor_from_proto(
                attribute.t, f"node '{node.name}' ({node.op_type}) attribute '{attribute.name}'"
            )
        elif attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise _refuse(f"node '{node.name}' ({node.op_type}): subgraphs are not supported")
        else:
            value = onnx.helper.get_attribute_value(attribute)
            attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
    for key, value in attrs.items():
        if isinstance(value, tuple | list) and not isinstance(value, str):
            attrs[key] = list(value)
    return attrs


# --- the load-time trace -----------------------------------------------------------------------


def _trace(analysis: GraphAnalysis) -> None:
    """Run every node once: constant nodes on real values (they become constants), the rest on
    meta tensors (shapes only, nothing computed), checking every node can run as declared."""
    env: dict[str, Tensor] = {name: _meta(v) for name, v in analysis.params.items()}
    env.update((name, _meta(v)) for name, v in analysis.buffers.items())
    env.update(analysis.statics)
    graph_input = analysis.input
    env[graph_input.name] = torch.empty(graph_input.shape, dtype=graph_input.dtype, device="meta")
    analysis.shapes.update((name, tuple(value.shape)) for name, value in env.items())
    param_names = frozenset(analysis.params)
    graph = analysis.proto.graph
    consumed = {name for node in graph.node for name in node.input} | {analysis.output}
    folded = 0
    for index, node in enumerate(graph.node):
        view = _view_of(node, index, analysis, param_names)
        _check_node(node, view, env)
        static = _is_static(view, analysis.statics)
        values = _run_traced(view, env, static, consumed)
        for name, value in zip(view.outputs, values, strict=False):
            if name:
                env[name] = value
                analysis.shapes[name] = _shape_of(value)
                if static:
                    analysis.statics[name] = value
        if static:
            folded += sum(t.numel() for t in _tensors_of(values))
            if folded > MAX_FOLDED_TOTAL:
                raise view.refuse(f"load-time constants of over {MAX_FOLDED_TOTAL} values in all")
        if not static:
            analysis.dynamic.append(view)


def _is_static(view: NodeView, statics: dict[str, Tensor]) -> bool:
    """Computed from constants alone (Dropout never: it draws a mask each step)."""
    skipped = METADATA_INPUTS.get(view.op_type, set())
    data = [name for i, name in enumerate(view.inputs) if name and i not in skipped]
    return view.op_type != "Dropout" and all(name in statics for name in data)


def _meta(value: Tensor) -> Tensor:
    return torch.empty(value.shape, dtype=value.dtype, device="meta")


def _to_meta(value):
    """Tensors, and sequences (lists, from SplitToSequence) of them, on the meta device."""
    if isinstance(value, list):
        return [_to_meta(item) for item in value]
    return value if value is None or value.is_meta else value.to("meta")


def _shape_of(value) -> tuple[int, ...]:
    """A sequence's 'shape' is its length (only SequenceAt reads it)."""
    return (len(value),) if isinstance(value, list) else tuple(value.shape)


def _tensors_of(values) -> list[Tensor]:
    return [t for v in values for t in (v if isinstance(v, list) else [v])]


def _view_of(node: onnx.NodeProto, index: int, analysis: GraphAnalysis, params) -> NodeView:
    return NodeView(
        name=node.name or f"{node.op_type}_{index}",
        op_type=node.op_type,
        attrs=_read_attributes(node),
        inputs=tuple(node.input),
        outputs=tuple(node.output),
        statics=analysis.statics,
        params=params,
        shapes=analysis.shapes,
    )


def _check_node(node: onnx.NodeProto, view: NodeView, env: dict[str, Tensor]) -> None:
    if node.domain not in ("", "ai.onnx"):
        raise view.refuse(f"operator domain '{node.domain}' is not supported")
    if view.op_type not in SUPPORTED_OPS:
        raise view.refuse("operator not supported (see docs/onnx.md for the supported table)")
    for name in view.inputs:
        if name and name not in env:
            raise view.refuse(f"input '{name}' is not defined before this node")


def _run_traced(
    view: NodeView, env: dict[str, Tensor], static: bool, consumed: set[str]
) -> tuple[Tensor, ...]:
    kernel = SUPPORTED_OPS[view.op_type].build(view)
    args = [env[name] if name else None for name in view.inputs]
    if static:  # computed here: its size is checked on meta tensors before anything is allocated
        _check_sizes(view, _shapes_only(kernel, args), MAX_FOLDED_ELEMENTS)
        values = _call(view, kernel, args)
        _check_sizes(view, values, MAX_FOLDED_ELEMENTS)
    else:
        values = _call(view, kernel, [_to_meta(a) for a in args])
        _check_sizes(view, values, MAX_VALUE_ELEMENTS)
    missing = [name for name in view.outputs[len(values) :] if name in consumed]
    if missing:  # e.g. a Dropout mask or LayerNormalization's Mean, read by a later node
        raise view.refuse(f"outputs {missing} are not supported")
    for value in _tensors_of(values):
        if value.is_floating_point() and value.dtype != torch.float32:
            raise view.refuse(f"dtype {value.dtype} is not supported (float32 only)")
    return values


def _call(view: NodeView, kernel, args) -> tuple[Tensor, ...]:
    try:
        return kernel(args, RunContext(NATIVE_OPS, None))
    except InvalidSpec:
        raise
    except Exception as err:  # noqa: BLE001 — torch reports bad shapes as many types
        raise view.refuse(f"cannot run on its inputs ({_first_line(err)})") from err


def _shapes_only(kernel, args) -> tuple[Tensor, ...]:
    """The outputs as meta tensors, or () when their shape depends on values (Range reads its
    bounds: its builder refuses a range over the limit before allocating it)."""
    try:
        return kernel([_to_meta(a) for a in args], RunContext(NATIVE_OPS, None))
    except InvalidSpec:
        raise
    except Exception:  # noqa: BLE001 — the real run below reports a genuine failure
        return ()


def _check_sizes(view: NodeView, values, limit: int) -> None:
    for value in _tensors_of(values):
        if value.numel() > limit:
            raise view.refuse(f"a value of {value.numel()} elements (at most {limit})")


# --- planning ----------------------------------------------------------------------------------


def _plan_steps(analysis: GraphAnalysis) -> list[Step]:
    """Fused patterns plus one step per remaining dynamic node, in graph order, minus the steps
    whose values nothing needs."""
    views = analysis.dynamic
    results = {analysis.output, *analysis.buffer_updates}
    fusions = find_fusions(views, results)
    absorbed = set().union(*(f.absorbed for f in fusions)) if fusions else set()
    fused_at = {f.position: f.step for f in fusions}
    steps: list[Step] = []
    for index, view in enumerate(views):
        if index in fused_at:
            steps.append(fused_at[index])
        elif index not in absorbed:
            rule = SUPPORTED_OPS[view.op_type]
            steps.append(
                Step(
                    view.name,
                    view.op_type,
                    view.inputs,
                    view.outputs,
                    rule.build(view),
                    rule.repro_safe(view),
                    rule.runs_as,
                )
            )
    return _drop_unused(steps, results)


def _drop_unused(steps: list[Step], results: set[str]) -> list[Step]:
    needed = set(results)
    kept: list[Step] = []
    for step in reversed(steps):
        if needed.intersection(step.outputs):
            kept.append(step)
            needed.update(name for name in step.inputs if name)
    return kept[::-1]


# --- folding for the exporter ------------------------------------------------------------------


def compute_folded_onnx(blob: bytes) -> bytes:
    """The same graph with every constant-only node replaced by the Constant it computes, so the
    file a job carries holds no shape arithmetic (and no load-time float math to disagree on)."""
    analysis = analyse_onnx_graph(blob)
    graph = analysis.proto.graph
    initializer_names = {t.name for t in graph.initializer}
    read = {name for view in analysis.dynamic for name in view.inputs if name}
    folded = sorted(
        name for name in read if name in analysis.statics and name not in initializer_names
    )
    constants = [
        onnx.helper.make_node(
            "Constant",
            [],
            [name],
            name=f"folded/{name}",
            value=numpy_helper.from_array(analysis.statics[name].numpy(), name),
        )
        for name in folded
    ]
    dynamic_names = {view.name for view in analysis.dynamic}
    kept = [n for i, n in enumerate(graph.node) if (n.name or f"{n.op_type}_{i}") in dynamic_names]
    del graph.node[:]
    graph.node.extend(constants + kept)
    return analysis.proto.SerializeToString()
