"""Subgraphs the exporter writes for one `ops` call, fused back into that call.

torch's exporter writes `nn.Linear` on a 3-D input as Transpose(W) → MatMul → Add(b), and
`scaled_dot_product_attention(is_causal=True)` as scaled q·kᵀ + causal mask → Softmax → ·v. Run
node by node those are a plain matmul and softmax (not repro-safe); fused they are `ops.linear`
and `ops.causal_attention`, which the repro profile computes in a fixed order. A pattern fuses only
when its inner values feed nothing else, so the fused step computes exactly what the graph says.
"""

import math
from dataclasses import dataclass

import torch

from protocol.onnx.table import NodeView, Step

SCALE_TOLERANCE = 1e-5  # the exporter splits 1/√D into two √(1/√D) factors, rounded each


@dataclass(frozen=True)
class Fusion:
    step: Step
    absorbed: frozenset[int]  # indices (into the dynamic node list) the step replaces
    position: int  # where the step runs: its last absorbed node's place


class _Graph:
    """Producer and consumer lookups over the dynamic nodes."""

    def __init__(self, views: list[NodeView], outputs: set[str]):
        self.views = views
        self.producer = {out: i for i, v in enumerate(views) for out in v.outputs if out}
        self.uses: dict[str, list[int]] = {}
        for i, view in enumerate(views):
            for name in view.inputs:
                self.uses.setdefault(name, []).append(i)
        self.graph_outputs = outputs

    def made_by(self, value: str, op_type: str) -> int | None:
        """The node of `op_type` producing `value` when nothing but one node reads it."""
        index = self.producer.get(value)
        if index is None or self.views[index].op_type != op_type or not self.single_use(value):
            return None
        return index

    def single_use(self, value: str) -> bool:
        return len(self.uses.get(value, [])) == 1 and value not in self.graph_outputs

    def only_user(self, value: str, op_type: str) -> int | None:
        if not self.single_use(value):
            return None
        index = self.uses[value][0]
        return index if self.views[index].op_type == op_type else None


def find_fusions(views: list[NodeView], graph_outputs: set[str]) -> list[Fusion]:
    graph = _Graph(views, graph_outputs)
    fusions: list[Fusion] = []
    taken: set[int] = set()
    for i, view in enumerate(views):
        finder = {"Softmax": _match_attention, "MatMul": _match_linear}.get(view.op_type)
        fusion = finder(graph, i) if finder else None
        if fusion is not None and not fusion.absorbed & taken:
            fusions.append(fusion)
            taken |= fusion.absorbed
    return fusions


# --- linear ------------------------------------------------------------------------------------


def _match_linear(graph: _Graph, index: int) -> Fusion | None:
    view = graph.views[index]
    x, w = view.inputs
    absorbed = {index}
    transpose = graph.made_by(w, "Transpose")
    if transpose is not None and graph.views[transpose].attrs.get("perm") == [1, 0]:
        weight, transposed = graph.views[transpose].inputs[0], False
        absorbed.add(transpose)
    else:
        weight, transposed = w, True  # x @ W: ops.linear wants Wᵀ (a view)
    if weight not in view.params or len(view.shape(weight)) != 2:
        return None
    bias, output = _bias_of(graph, view, absorbed)
    step = Step(
        view.name,
        "Linear",
        (x, weight, bias),
        (output,),
        _linear_kernel(transposed),
        True,
        "ops.linear (fused Transpose/MatMul/Add)",
    )
    return Fusion(step, frozenset(absorbed), max(absorbed))


def _bias_of(graph: _Graph, view: NodeView, absorbed: set[int]) -> tuple[str, str]:
    """A following Add of a trained vector of the output width is the bias."""
    product = view.outputs[0]
    add = graph.only_user(product, "Add")
    if add is None:
        return "", product
    other = [name for name in graph.views[add].inputs if name != product]
    width = view.shape(product)[-1]
    if len(other) != 1 or other[0] not in view.params or view.shape(other[0]) != (width,):
        return "", product
    absorbed.add(add)
    return other[0], graph.views[add].outputs[0]


def _linear_kernel(transposed: bool):
    def run(args, ctx):
        x, weight, bias = args
        return (ctx.ops.linear(x, weight.t() if transposed else weight, bias),)

    return run


# --- causal attention --------------------------------------------------------------------------


def _match_attention(graph: _Graph, index: int) -> Fusion | None:
    softmax = graph.views[index]
    scores_in = softmax.inputs[0]
    rank = len(softmax.shape(scores_in))
    if rank != 4 or softmax.attrs.get("axis", -1) not in (-1, rank - 1):
        return None
    absorbed = {index}
    scores = _masked_scores(graph, scores_in, absorbed)
    out = graph.only_user(softmax.outputs[0], "MatMul")
    if scores is None or out is None or graph.views[out].inputs[0] != softmax.outputs[0]:
        return None
    absorbed.add(out)
    scale, product = _peel_scales(graph, scores, absorbed)
    matmul = graph.made_by(product, "MatMul")
    if matmul is None:
        return None
    absorbed.add(matmul)
    q_scale, q = _peel_scales(graph, graph.views[matmul].inputs[0], absorbed)
    k_scale, k_t = _peel_scales(graph, graph.views[matmul].inputs[1], absorbed)
    v = graph.views[out].inputs[1]
    if not _is_attention_geometry(softmax, q, k_t, v, scale * q_scale * k_scale):
        return None
    step = Step(
        softmax.name,
        "CausalAttention",
        (q, k_t, v),
        graph.views[out].outputs,
        _attention_kernel,
        True,
        "ops.causal_attention (fused MatMul/scale/mask/Softmax/MatMul)",
    )
    return Fusion(step, frozenset(absorbed), max(absorbed))


def _masked_scores(graph: _Graph, value: str, absorbed: set[int]) -> str | None:
    """`value` = scores + causal mask (0 on and below the diagonal, −inf above)."""
    add = graph.made_by(value, "Add")
    if add is None:
        return None
    view = graph.views[add]
    for scores, mask in (view.inputs, view.inputs[::-1]):
        if mask in view.statics and _is_causal_mask(view.statics[mask]):
            absorbed.add(add)
            return scores
    return None


def _is_causal_mask(mask: torch.Tensor) -> bool:
    if mask.dim() < 2 or mask.shape[-1] != mask.shape[-2] or mask.numel() != mask.shape[-1] ** 2:
        return False
    square = mask.reshape(mask.shape[-1], -1).float()
    above = torch.ones_like(square, dtype=torch.bool).triu(1)
    # dynamo writes float32's lowest instead of −inf: after the softmax both are exact zeros
    # (exp underflows) for any score below about 1e38
    masked = (square[above] == float("-inf")) | (square[above] == torch.finfo(torch.float32).min)
    return bool(masked.all() and (square[~above] == 0).all())


def _peel_scales(graph: _Graph, value: str, absorbed: set[int]) -> tuple[float, str]:
    """Strip Mul / Div by constant scalars off `value`: (the product of factors, the source)."""
    scale = 1.0
    while True:
        index = graph.producer.get(value)
        if index is None or not graph.single_use(value):
            return scale, value
        view = graph.views[index]
        factor = _scalar_factor(view)
        if factor is None:
            return scale, value
        scale *= factor
        absorbed.add(index)
        value = view.inputs[0]


def _scalar_factor(view: NodeView) -> float | None:
    if view.op_type not in ("Mul", "Div") or len(view.inputs) != 2:
        return None
    constant = view.statics.get(view.inputs[1])
    if constant is None or constant.numel() != 1 or not view.is_dynamic(0):
        return None
    value = float(constant.reshape(()))
    if view.op_type == "Div":
        return 1.0 / value if value else None
    return value


def _is_attention_geometry(view: NodeView, q: str, k_t: str, v: str, scale: float) -> bool:
    shapes = [view.shape(name) for name in (q, k_t, v)]
    if any(len(shape) != 4 for shape in shapes):
        return False
    (b, h, t, d), k_shape, v_shape = shapes
    if k_shape != (b, h, d, t) or v_shape[:3] != (b, h, t):
        return False
    return math.isclose(scale, 1.0 / math.sqrt(d), rel_tol=SCALE_TOLERANCE)


def _attention_kernel(args, ctx):
    q, k_t, v = args
    return (ctx.ops.causal_attention(q, k_t.transpose(-2, -1), v),)
