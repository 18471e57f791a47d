"""`ReproOps`: the `NativeOps` interface on fixed-order kernels (the `repro` execution profile).

Layers, attention and losses go through `protocol.repro.functions`; what `NativeOps` already does
with elementwise ops only — dropout masks from `torch.rand`, U(±b) init, SGD and AdamW updates —
is inherited unchanged, because those are bit-identical on any threads and ISA as they stand
(checked by tests/repro/test_ops_matrix.py rather than assumed).
"""

import torch
from torch import Tensor

from protocol.ops import NativeOps
from protocol.repro import functions as F


class ReproOps(NativeOps):
    name = "repro"

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.LinearFunction.apply(x, weight, bias)

    def conv2d(self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
        return F.Conv2dFunction.apply(x, weight, bias, stride, padding)

    def embedding(self, indices: Tensor, weight: Tensor) -> Tensor:
        return F.EmbeddingFunction.apply(indices, weight)

    def layer_norm(self, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        return F.LayerNormFunction.apply(x, weight, bias, eps)

    def relu(self, x: Tensor) -> Tensor:
        # A select, not max(x, 0): max's sign of zero for -0 differs between vector and scalar code.
        return torch.where(x > 0, x, torch.zeros_like(x))

    def gelu(self, x: Tensor) -> Tensor:
        return F.GeluTanhFunction.apply(x)

    def causal_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.CausalAttentionFunction.apply(q, k, v)

    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.CrossEntropyFunction.apply(logits, targets)

    def mse_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.MSELossFunction.apply(prediction, target)


REPRO_OPS = ReproOps()
