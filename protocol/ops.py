"""The operator set every registered model and optimizer is written against.

`NativeOps` calls torch directly: bit-reproducible only when thread count and CPU capability are
pinned by the execution profile. The `repro` profile swaps in `protocol.repro` ops with the same
method names and signatures, which are bit-identical whatever the threads or ISA.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class NativeOps:
    name = "native"

    # --- layers -----------------------------------------------------------------------------
    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def conv2d(
        self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int
    ) -> Tensor:
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)

    def embedding(self, indices: Tensor, weight: Tensor) -> Tensor:
        return F.embedding(indices, weight)

    def layer_norm(self, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)

    def relu(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def gelu(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")

    def causal_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Scaled dot-product attention with a causal mask; q, k, v are (B, H, T, D)."""
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        length = q.shape[-2]
        mask = torch.ones(length, length, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    def tanh(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def sigmoid(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def softmax(self, x: Tensor, dim: int = -1) -> Tensor:
        return torch.softmax(x, dim=dim)

    def batch_norm(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        momentum: float,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Training-mode batch norm of (N, C, ...) over every axis but C: (output, new running
        mean, new running variance), the running statistics detached. `momentum` is torch's (the
        batch statistic's weight); the running variance follows the unbiased batch variance."""
        new_mean, new_var = running_mean.detach().clone(), running_var.detach().clone()
        out = F.batch_norm(x, new_mean, new_var, weight, bias, True, momentum, eps)
        return out, new_mean, new_var

    def batch_norm_frozen(
        self, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float
    ) -> Tensor:
        """Batch norm with given statistics (evaluation): no batch statistics, nothing updated."""
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    def avg_pool2d(self, x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        """Average pool of (N, C, H, W) without padding."""
        return F.avg_pool2d(x, kernel, stride)

    def global_avg_pool(self, x: Tensor) -> Tensor:
        """Mean over every axis after (N, C), kept as size 1."""
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def dropout(self, x: Tensor, p: float, generator: torch.Generator) -> Tensor:
        if p <= 0.0:
            return x
        keep = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - p))

    # --- losses -----------------------------------------------------------------------------
    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy; logits (N, C), targets (N,) int64."""
        return F.cross_entropy(logits, targets)

    def mse_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)

    # --- training ---------------------------------------------------------------------------
    def uniform(
        self, shape: tuple[int, ...], bound: float, generator: torch.Generator, dtype: torch.dtype
    ) -> Tensor:
        """U(-bound, bound) initialisation (torch.rand is ISA-independent; randn is not)."""
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2.0 - 1.0) * bound

    def gradients(self, loss: Tensor, params: list[Tensor]) -> list[Tensor]:
        return list(torch.autograd.grad(loss, params))

    def sgd_update(
        self,
        param: Tensor,
        grad: Tensor,
        momentum_buffer: Tensor,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> tuple[Tensor, Tensor]:
        """SGD with momentum and L2 weight decay (torch.optim.SGD semantics, no dampening)."""
        grad = grad + weight_decay * param if weight_decay else grad
        buffer = momentum_buffer * momentum + grad
        return param - lr * buffer, buffer

    def adamw_update(
        self,
        param: Tensor,
        grad: Tensor,
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
        step: int,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """AdamW (decoupled weight decay); `step` counts from 1."""
        param = param * (1.0 - lr * weight_decay)
        exp_avg = exp_avg * beta1 + grad * (1.0 - beta1)
        exp_avg_sq = exp_avg_sq * beta2 + grad * grad * (1.0 - beta2)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        denom = exp_avg_sq.sqrt() / math.sqrt(bias_correction2) + eps
        return param - (lr / bias_correction1) * (exp_avg / denom), exp_avg, exp_avg_sq


NATIVE_OPS = NativeOps()
