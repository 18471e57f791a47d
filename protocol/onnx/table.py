"""The supported-operator table: ONNX op type → (builder, repro-safety).

A builder reads one node's attributes and static inputs, refuses what it cannot run exactly (with
`InvalidSpec` naming the node and operator) and returns the node's kernel. Kernels go through the
`ops` object where it has the operation (so the repro profile swaps in its fixed-order kernels) and
plain torch elsewhere. `repro_safe` says whether the kernel's forward *and* backward are
bit-identical whatever the threads or ISA: true for the `ops` calls, data movement, exactly
rounded elementwise arithmetic without broadcasting of a trained value (a broadcast's backward
sums with torch's thread-dependent order), and anything computed only from constants.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from protocol.errors import InvalidSpec

ONNX_FIELD = "model.onnx"  # the field every refusal names
# A value computed at load from constants (the coordinator folds uploaded graphs): a few bytes
# of file must not make it allocate gigabytes. 2**24 floats hold a 4096×4096 causal mask.
MAX_FOLDED_ELEMENTS = 2**24
ONNX_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool}


@dataclass(frozen=True)
class RunContext:
    ops: Any
    dropout: Callable[[str], torch.Generator] | None  # layer name → generator, None in eval
    training: bool = True  # False: batch norms use their running statistics (evaluation)


Kernel = Callable[[list[Tensor | None], RunContext], tuple[Tensor, ...]]


@dataclass(frozen=True)
class NodeView:
    """What a builder may know about a node: attributes, which inputs are constants (and their
    values), which are trained parameters, and every value's shape from the load-time trace."""

    name: str
    op_type: str
    attrs: dict[str, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    statics: dict[str, Tensor]
    params: frozenset[str]
    shapes: dict[str, tuple[int, ...]]

    def refuse(self, reason: str) -> InvalidSpec:
        return InvalidSpec(f"node '{self.name}' ({self.op_type}): {reason}", ONNX_FIELD)

    def input(self, index: int) -> str:
        return self.inputs[index] if index < len(self.inputs) else ""

    def static(self, index: int) -> Tensor | None:
        return self.statics.get(self.input(index))

    def static_ints(self, index: int, what: str) -> list[int] | None:
        """A constant integer input (shapes, axes); None when the input is absent."""
        if not self.input(index):
            return None
        value = self.static(index)
        if value is None:
            raise self.refuse(f"{what} must be a constant (dynamic shapes are not supported)")
        return [int(v) for v in value.reshape(-1).tolist()]

    def is_dynamic(self, index: int) -> bool:
        name = self.input(index)
        return bool(name) and name not in self.statics

    def shape(self, value: str) -> tuple[int, ...]:
        return self.shapes[value]


@dataclass(frozen=True)
class Step:
    """One unit the interpreter runs: a node, or a fused pattern of nodes (`patterns`)."""

    name: str
    op: str  # the ONNX op type, or the fused pattern's name
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kernel: Kernel
    repro_safe: bool
    runs_as: str


@dataclass(frozen=True)
class OpRule:
    build: Callable[[NodeView], Kernel]
    repro_safe: Callable[[NodeView], bool]
    runs_as: str  # for docs and summaries: what computes it


def _always(_view: NodeView) -> bool:
    return True


def _never(_view: NodeView) -> bool:
    return False


def _no_trained_broadcast(view: NodeView) -> bool:
    """Elementwise ops are exact, but a broadcast trained input's gradient is a torch sum."""
    out = view.shape(view.outputs[0])
    return all(view.shape(name) == out for i, name in enumerate(view.inputs) if view.is_dynamic(i))


def _single(fn: Callable[..., Tensor]) -> Callable[[NodeView], Kernel]:
    """A builder for attribute-free ops: the kernel applies `fn` to the inputs."""

    def build(_view: NodeView) -> Kernel:
        return lambda args, _ctx: (fn(*args),)

    return build


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- elementwise -------------------------------------------------------------------------------


def _build_div(_view: NodeView) -> Kernel:
    def run(args, _ctx):
        a, b = args
        if a.is_floating_point():
            return (a / b,)
        return (torch.div(a, b, rounding_mode="trunc"),)  # ONNX integer division truncates

    return run


def _build_gelu(view: NodeView) -> Kernel:
    approximate = view.attrs.get("approximate", "none")
    if approximate == "tanh":
        return lambda args, ctx: (ctx.ops.gelu(args[0]),)
    return lambda args, _ctx: (F.gelu(args[0]),)


def _gelu_is_tanh(view: NodeView) -> bool:
    return view.attrs.get("approximate", "none") == "tanh"


def _build_softmax(view: NodeView) -> Kernel:
    axis = view.attrs.get("axis", -1)
    return lambda args, ctx: (ctx.ops.softmax(args[0], axis),)


def _build_cast(view: NodeView) -> Kernel:
    dtype = ONNX_DTYPES.get(view.attrs.get("to"))
    if dtype is None:
        raise view.refuse(f"cast to ONNX dtype {view.attrs.get('to')} is not supported")
    return lambda args, _ctx: (args[0].to(dtype),)


def _build_dropout(view: NodeView) -> Kernel:
    ratio = view.static(1)
    training = view.static(2)
    if (view.input(1) and ratio is None) or (view.input(2) and training is None):
        raise view.refuse("ratio and training_mode must be constants")
    p = float(ratio) if ratio is not None else view.attrs.get("ratio", 0.5)
    active = bool(training) if training is not None else False

    def run(args, ctx):
        if not active or ctx.dropout is None or p <= 0.0:
            return (args[0],)
        return (ctx.ops.dropout(args[0], p, ctx.dropout(view.name)),)

    return run


# --- shapes and data movement (usually constant-folded at load) -------------------------------


def _build_constant(view: NodeView) -> Kernel:
    attrs = view.attrs
    if "value" in attrs:
        value = attrs["value"]
    elif "value_float" in attrs or "value_floats" in attrs:
        value = torch.tensor(attrs.get("value_float", attrs.get("value_floats")))
    elif "value_int" in attrs or "value_ints" in attrs:
        value = torch.tensor(attrs.get("value_int", attrs.get("value_ints")), dtype=torch.int64)
    else:
        raise view.refuse(f"constant attributes {sorted(attrs)} are not supported")
    return lambda _args, _ctx: (value,)


def _build_shape(view: NodeView) -> Kernel:
    start, end = view.attrs.get("start", 0), view.attrs.get("end")
    return lambda args, _ctx: (torch.tensor(list(args[0].shape)[start:end], dtype=torch.int64),)


def _build_reshape(view: NodeView) -> Kernel:
    target = view.static_ints(1, "the target shape")
    allow_zero = view.attrs.get("allowzero", 0)

    def run(args, _ctx):
        x = args[0]
        shape = [x.shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(target)]
        return (x.reshape(shape),)

    return run


def _build_transpose(view: NodeView) -> Kernel:
    perm = view.attrs.get("perm")
    return lambda args, _ctx: (args[0].permute(perm or list(range(args[0].dim()))[::-1]),)


def _build_flatten(view: NodeView) -> Kernel:
    axis = view.attrs.get("axis", 1)

    def run(args, _ctx):
        x = args[0]
        split = _axis(axis, x.dim())
        return (x.reshape(math.prod(x.shape[:split]), math.prod(x.shape[split:])),)

    return run


def _axes_of(view: NodeView, index: int) -> list[int] | None:
    """Axes as the input (opset 13+) or the attribute (older opsets)."""
    axes = view.static_ints(index, "axes")
    return axes if axes is not None else view.attrs.get("axes")


def _build_unsqueeze(view: NodeView) -> Kernel:
    axes = _axes_of(view, 1)

    def run(args, _ctx):
        x = args[0]
        rank = x.dim() + len(axes)
        for axis in sorted(_axis(a, rank) for a in axes):
            x = x.unsqueeze(axis)
        return (x,)

    return run


def _build_squeeze(view: NodeView) -> Kernel:
    axes = _axes_of(view, 1)

    def run(args, _ctx):
        x = args[0]
        dims = (
            [_axis(a, x.dim()) for a in axes]
            if axes
            else [i for i, d in enumerate(x.shape) if d == 1]
        )
        return (x.squeeze(tuple(dims)),)

    return run


def _build_slice(view: NodeView) -> Kernel:
    starts = view.static_ints(1, "starts")
    ends = view.static_ints(2, "ends")
    axes = view.static_ints(3, "axes") or list(range(len(starts)))
    steps = view.static_ints(4, "steps") or [1] * len(starts)
    if any(step <= 0 for step in steps):
        raise view.refuse("only positive slice steps are supported")

    def run(args, _ctx):
        x = args[0]
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            dim = _axis(axis, x.dim())
            size = x.shape[dim]  # clamped: exporters write INT64_MAX for "to the end"
            index[dim] = slice(max(min(start, size), -size), max(min(end, size), -size), step)
        return (x[tuple(index)],)

    return run


def _build_concat(view: NodeView) -> Kernel:
    axis = view.attrs.get("axis", 0)
    return lambda args, _ctx: (torch.cat(list(args), dim=axis),)


def _build_split(view: NodeView) -> Kernel:
    axis = view.attrs.get("axis", 0)
    sizes = view.static_ints(1, "split sizes") or view.attrs.get("split")
    parts = len(view.outputs)

    def run(args, _ctx):
        x = args[0]
        if sizes:
            return tuple(torch.split(x, sizes, dim=axis))
        return tuple(torch.chunk(x, parts, dim=axis))

    return run


def _build_expand(view: NodeView) -> Kernel:
    shape = view.static_ints(1, "the target shape")

    def run(args, _ctx):
        x = args[0]
        return (x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape))),)

    return run


def _expand_is_safe(view: NodeView) -> bool:
    """Expanding a trained value sums its gradient back (a torch sum)."""
    return not view.is_dynamic(0) or view.shape(view.inputs[0]) == view.shape(view.outputs[0])


def _build_gather(view: NodeView) -> Kernel:
    axis = view.attrs.get("axis", 0)
    if _is_embedding(view):
        return lambda args, ctx: (ctx.ops.embedding(args[1], args[0]),)

    def run(args, _ctx):
        data, indices = args
        dim = _axis(axis, data.dim())
        flat = torch.where(indices < 0, indices + data.shape[dim], indices).reshape(-1)
        picked = data.index_select(dim, flat)
        shape = (*data.shape[:dim], *indices.shape, *data.shape[dim + 1 :])
        return (picked.reshape(shape),)

    return run


def _is_embedding(view: NodeView) -> bool:
    """Gather of rows of a trained 2-D table: `ops.embedding` (whose repro backward is fixed-order)."""
    return (
        view.input(0) in view.params
        and len(view.shape(view.inputs[0])) == 2
        and view.attrs.get("axis", 0) == 0
    )


def _gather_is_safe(view: NodeView) -> bool:
    return _is_embedding(view) or not view.is_dynamic(0)


def _build_split_to_sequence(view: NodeView) -> Kernel:
    """The dynamo exporter's split (a sequence value is a Python list of tensors)."""
    axis, keep = view.attrs.get("axis", 0), view.attrs.get("keepdims", 1)
    split = view.static_ints(1, "split sizes")

    def run(args, _ctx):
        x = args[0]
        if split is None:
            parts = torch.split(x, 1, dim=axis)
            return ([p if keep else p.squeeze(axis) for p in parts],)
        sizes = split if view.static(1).dim() == 1 else split[0]
        return (list(torch.split(x, sizes, dim=axis)),)

    return run


def _build_sequence_at(view: NodeView) -> Kernel:
    position = view.static_ints(1, "the position")[0]
    return lambda args, _ctx: (args[0][position],)


def _build_range(view: NodeView) -> Kernel:
    def run(args, _ctx):
        start, limit, delta = (a.item() for a in args)
        if delta == 0 or math.ceil((limit - start) / delta) > MAX_FOLDED_ELEMENTS:
            raise view.refuse(
                f"a range of over {MAX_FOLDED_ELEMENTS} values or of step 0 (at most {MAX_FOLDED_ELEMENTS})"
            )
        return (torch.arange(start, limit, delta),)

    return run


def _build_constant_of_shape(view: NodeView) -> Kernel:
    shape = view.static_ints(0, "the shape")
    if math.prod(shape) > MAX_FOLDED_ELEMENTS:  # before torch.full allocates it
        raise view.refuse(
            f"a constant of {math.prod(shape)} values (at most {MAX_FOLDED_ELEMENTS})"
        )
    fill = view.attrs.get("value", torch.zeros(1))
    return lambda _args, _ctx: (torch.full(shape, fill.reshape(-1)[0].item(), dtype=fill.dtype),)


def _build_trilu(view: NodeView) -> Kernel:
    k = (view.static_ints(1, "k") or [0])[0]
    upper = view.attrs.get("upper", 1)
    return lambda args, _ctx: (torch.triu(args[0], k) if upper else torch.tril(args[0], k),)


def _build_cast_like(_view: NodeView) -> Kernel:
    return lambda args, _ctx: (args[0].to(args[1].dtype),)


# --- layers ------------------------------------------------------------------------------------


def _build_gemm(view: NodeView) -> Kernel:
    alpha, beta = view.attrs.get("alpha", 1.0), view.attrs.get("beta", 1.0)
    trans_a, trans_b = view.attrs.get("transA", 0), view.attrs.get("transB", 0)
    if _gemm_is_linear(view):
        return lambda args, ctx: (
            ctx.ops.linear(args[0], args[1] if trans_b else args[1].t(), _arg(args, 2)),
        )

    def run(args, _ctx):
        a = args[0].t() if trans_a else args[0]
        b = args[1].t() if trans_b else args[1]
        out = alpha * (a @ b)
        bias = _arg(args, 2)
        return (out if bias is None else out + beta * bias,)

    return run


def _arg(args: list[Tensor | None], index: int) -> Tensor | None:
    return args[index] if index < len(args) else None


def _gemm_is_linear(view: NodeView) -> bool:
    """x @ Wᵀ + b with W a trained 2-D matrix and b absent or a trained vector: `ops.linear`."""
    attrs = view.attrs
    plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
    bias = view.input(2)
    bias_ok = not bias or (bias in view.params and len(view.shape(bias)) == 1)
    return plain and not attrs.get("transA", 0) and view.input(1) in view.params and bias_ok


def _conv_geometry(view: NodeView) -> tuple[list[int], list[int], list[int], int]:
    attrs = view.attrs
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise view.refuse(f"auto_pad {attrs['auto_pad']} is not supported")
    if len(view.shape(view.inputs[1])) != 4:
        raise view.refuse("only 2-D convolutions are supported")
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise view.refuse(f"asymmetric padding {pads} is not supported")
    return (
        attrs.get("strides", [1, 1]),
        pads[:2],
        attrs.get("dilations", [1, 1]),
        attrs.get("group", 1),
    )


def _build_conv(view: NodeView) -> Kernel:
    strides, pads, dilations, groups = _conv_geometry(view)
    if _conv_is_plain(view):
        return lambda args, ctx: (
            ctx.ops.conv2d(args[0], args[1], _arg(args, 2), strides[0], pads[0]),
        )
    return lambda args, _ctx: (
        F.conv2d(args[0], args[1], _arg(args, 2), strides, pads, dilations, groups),
    )


def _conv_is_plain(view: NodeView) -> bool:
    """Square stride and padding, no dilation or groups: what `ops.conv2d` computes."""
    strides, pads, dilations, groups = _conv_geometry(view)
    return strides[0] == strides[1] and pads[0] == pads[1] and dilations == [1, 1] and groups == 1


def _build_layer_norm(view: NodeView) -> Kernel:
    rank = len(view.shape(view.inputs[0]))
    if _axis(view.attrs.get("axis", -1), rank) != rank - 1:
        raise view.refuse("only normalisation over the last axis is supported")
    eps = view.attrs.get("epsilon", 1e-5)

    def run(args, ctx):
        scale, bias = args[1], _arg(args, 2)
        return (
            ctx.ops.layer_norm(
                args[0], scale, torch.zeros_like(scale) if bias is None else bias, eps
            ),
        )

    return run


def _build_batch_norm(view: NodeView) -> Kernel:
    """Training mode normalises with the batch's statistics and also returns the updated running
    mean and variance (torch's convention: the running variance is the unbiased one)."""
    eps = view.attrs.get("epsilon", 1e-5)
    keep = view.attrs.get("momentum", 0.9)  # ONNX: running = running·momentum + batch·(1−momentum)
    if not view.attrs.get("training_mode", 0):
        if any(view.outputs[1:]):
            raise view.refuse("inference mode has one output")
        return lambda args, _ctx: (
            F.batch_norm(args[0], args[3], args[4], args[1], args[2], False, 0.0, eps),
        )

    def run(args, ctx):
        x, scale, bias, mean, var = args
        if not ctx.training:  # evaluation: the running statistics, left as they are
            return ctx.ops.batch_norm_frozen(x, scale, bias, mean, var, eps), mean, var
        return ctx.ops.batch_norm(x, scale, bias, mean, var, 1.0 - keep, eps)

    return run


def _batch_norm_is_safe(view: NodeView) -> bool:
    """Training mode runs `ops.batch_norm` (fixed-order statistics, backward and running-stat
    update); inference mode is torch's (its sqrt is MKL's, its parameter gradients torch sums)."""
    return bool(view.attrs.get("training_mode", 0))


def _pool_geometry(view: NodeView) -> tuple[list[int], list[int], list[int], bool]:
    attrs = view.attrs
    kernel = attrs.get("kernel_shape", [])
    if len(kernel) != 2 or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise view.refuse("only 2-D pooling with explicit padding is supported")
    if attrs.get("dilations", [1, 1]) != [1, 1]:
        raise view.refuse("dilated pooling is not supported")
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise view.refuse(f"asymmetric padding {pads} is not supported")
    return kernel, attrs.get("strides", [1, 1]), pads[:2], bool(attrs.get("ceil_mode", 0))


def _build_max_pool(view: NodeView) -> Kernel:
    kernel, strides, pads, ceil = _pool_geometry(view)
    return lambda args, _ctx: (F.max_pool2d(args[0], kernel, strides, pads, ceil_mode=ceil),)


def _max_pool_is_safe(view: NodeView) -> bool:
    """Max is exact; non-overlapping windows send each gradient to one input (no sums)."""
    kernel, strides, pads, _ = _pool_geometry(view)
    return kernel == strides and pads == [0, 0]


def _build_average_pool(view: NodeView) -> Kernel:
    kernel, strides, pads, ceil = _pool_geometry(view)
    if _average_pool_is_safe(view):
        return lambda args, ctx: (ctx.ops.avg_pool2d(args[0], tuple(kernel), tuple(strides)),)
    include = bool(view.attrs.get("count_include_pad", 0))
    return lambda args, _ctx: (F.avg_pool2d(args[0], kernel, strides, pads, ceil, include),)


def _average_pool_is_safe(view: NodeView) -> bool:
    """No padding, no ceil mode, windows that do not overlap (stride >= kernel): a fixed-order
    sum per window, and each input's gradient is one value (never a sum)."""
    kernel, strides, pads, ceil = _pool_geometry(view)
    apart = all(s >= k for s, k in zip(strides, kernel, strict=True))
    return apart and pads == [0, 0] and not ceil


def _build_global_average_pool(_view: NodeView) -> Kernel:
    return lambda args, ctx: (ctx.ops.global_avg_pool(args[0]),)


def _build_reduce(reduce: Callable[..., Tensor]) -> Callable[[NodeView], Kernel]:
    def build(view: NodeView) -> Kernel:
        axes = _axes_of(view, 1)
        keep = bool(view.attrs.get("keepdims", 1))
        if not axes and view.attrs.get("noop_with_empty_axes", 0):
            return lambda args, _ctx: (args[0],)

        def run(args, _ctx):
            dims = tuple(axes) if axes else tuple(range(args[0].dim()))
            return (reduce(args[0], dim=dims, keepdim=keep),)

        return run

    return build


def _build_matmul(_view: NodeView) -> Kernel:
    """Only what `patterns` did not turn into `ops.linear` / `ops.causal_attention` runs here."""
    return lambda args, _ctx: (torch.matmul(args[0], args[1]),)


def _exact(fn: Callable[..., Tensor], runs_as: str) -> OpRule:
    return OpRule(_single(fn), _no_trained_broadcast, runs_as)


def _plain(fn: Callable[..., Tensor], runs_as: str) -> OpRule:
    return OpRule(_single(fn), _never, runs_as)


def _moves(build: Callable[[NodeView], Kernel], runs_as: str) -> OpRule:
    return OpRule(build, _always, runs_as)


SUPPORTED_OPS: dict[str, OpRule] = {
    # layers through `ops`
    "Gemm": OpRule(
        _build_gemm, _gemm_is_linear, "ops.linear (W trained, alpha=beta=1), else torch"
    ),
    "MatMul": OpRule(_build_matmul, _never, "torch.matmul, unless fused (see patterns)"),
    "Conv": OpRule(_build_conv, _conv_is_plain, "ops.conv2d (square stride/pad), else F.conv2d"),
    "LayerNormalization": OpRule(_build_layer_norm, _always, "ops.layer_norm (last axis)"),
    "Relu": OpRule(lambda _v: lambda args, ctx: (ctx.ops.relu(args[0]),), _always, "ops.relu"),
    "Gelu": OpRule(_build_gelu, _gelu_is_tanh, "ops.gelu (tanh), else F.gelu (erf)"),
    "Dropout": OpRule(_build_dropout, _always, "ops.dropout with the step's layer generator"),
    "BatchNormalization": OpRule(
        _build_batch_norm,
        _batch_norm_is_safe,
        "ops.batch_norm (training: + running stats), else F.batch_norm (inference)",
    ),
    "Softmax": OpRule(_build_softmax, _always, "ops.softmax, unless fused into attention"),
    "MaxPool": OpRule(_build_max_pool, _max_pool_is_safe, "F.max_pool2d"),
    "AveragePool": OpRule(
        _build_average_pool,
        _average_pool_is_safe,
        "ops.avg_pool2d (no padding, stride >= kernel), else F.avg_pool2d",
    ),
    "GlobalAveragePool": OpRule(
        _build_global_average_pool, _always, "ops.global_avg_pool (mean over H, W)"
    ),
    "ReduceMean": OpRule(_build_reduce(torch.mean), _never, "torch.mean"),
    "ReduceSum": OpRule(_build_reduce(torch.sum), _never, "torch.sum"),
    # elementwise
    "Add": _exact(torch.add, "+"),
    "Sub": _exact(torch.sub, "-"),
    "Mul": _exact(torch.mul, "×"),
    "Div": OpRule(_build_div, _no_trained_broadcast, "÷ (integers truncate)"),
    "Neg": _exact(torch.neg, "negation"),
    "Abs": _exact(torch.abs, "abs"),
    "Reciprocal": _exact(torch.reciprocal, "1/x"),
    "Equal": _exact(torch.eq, "=="),
    "Less": _exact(torch.lt, "<"),
    "Greater": _exact(torch.gt, ">"),
    "Not": _exact(torch.logical_not, "not"),
    "Where": _exact(torch.where, "select"),
    "Cast": OpRule(_build_cast, _always, "dtype conversion"),
    "CastLike": _moves(_build_cast_like, "dtype conversion"),
    "Tanh": OpRule(lambda _v: lambda args, ctx: (ctx.ops.tanh(args[0]),), _always, "ops.tanh"),
    "Sigmoid": OpRule(
        lambda _v: lambda args, ctx: (ctx.ops.sigmoid(args[0]),), _always, "ops.sigmoid"
    ),
    "Exp": _plain(torch.exp, "torch.exp"),
    "Log": _plain(torch.log, "torch.log"),
    "Sqrt": _plain(torch.sqrt, "torch.sqrt (MKL: not correctly rounded)"),
    "Erf": _plain(torch.erf, "torch.erf"),
    "Pow": _plain(torch.pow, "torch.pow"),
    # shapes and data movement
    "Identity": _moves(_single(lambda x: x), "the input"),
    "Constant": _moves(_build_constant, "its value"),
    "Shape": _moves(_build_shape, "the static shape"),
    "Reshape": _moves(_build_reshape, "reshape"),
    "Transpose": _moves(_build_transpose, "permute"),
    "Flatten": _moves(_build_flatten, "reshape"),
    "Unsqueeze": _moves(_build_unsqueeze, "unsqueeze"),
    "Squeeze": _moves(_build_squeeze, "squeeze"),
    "Slice": _moves(_build_slice, "slicing"),
    "Concat": _moves(_build_concat, "torch.cat"),
    "Split": _moves(_build_split, "torch.split"),
    "Expand": OpRule(_build_expand, _expand_is_safe, "expand"),
    "Gather": OpRule(_build_gather, _gather_is_safe, "ops.embedding (trained table), else index"),
    "SplitToSequence": _moves(_build_split_to_sequence, "torch.split (a list value)"),
    "SequenceAt": _moves(_build_sequence_at, "list indexing"),
    "Range": _moves(_build_range, "torch.arange"),
    "ConstantOfShape": _moves(_build_constant_of_shape, "torch.full"),
    "Trilu": _moves(_build_trilu, "triu / tril"),
}
