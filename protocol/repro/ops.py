"""`ReproOps`: the `NativeOps` interface on the fixed-order kernels (the `repro` execution profile).

Layers, attention, losses and optimizer updates go through `protocol.repro.functions` and the
kernels (ReLU too: a select, on any memory layout); what `NativeOps` does with elementwise ops that
torch computes the same everywhere — dropout masks from `torch.rand`, U(±b) init, residual adds —
is inherited unchanged (checked by
tests/repro rather than assumed). The optimizer updates are not inherited: they need a square root,
and torch's goes through MKL's vector math (not correctly rounded; dispatched by CPU).
"""

from torch import Tensor

from protocol.ops import NativeOps
from protocol.repro import functions as F
from protocol.repro import reference
from protocol.repro.backend import get_backend


class ReproOps(NativeOps):
    name = "repro"

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.LinearFunction.apply(x, weight, bias)

    def conv2d(
        self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int
    ) -> Tensor:
        return F.Conv2dFunction.apply(x, weight, bias, stride, padding)

    def embedding(self, indices: Tensor, weight: Tensor) -> Tensor:
        return F.EmbeddingFunction.apply(indices, weight)

    def layer_norm(self, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        return F.LayerNormFunction.apply(x, weight, bias, eps)

    def relu(self, x: Tensor) -> Tensor:
        return F.ReluFunction.apply(x)

    def gelu(self, x: Tensor) -> Tensor:
        return F.GeluTanhFunction.apply(x)

    def tanh(self, x: Tensor) -> Tensor:
        return F.TanhFunction.apply(x)

    def sigmoid(self, x: Tensor) -> Tensor:
        return F.SigmoidFunction.apply(x)

    def softmax(self, x: Tensor, dim: int = -1) -> Tensor:
        return F.SoftmaxFunction.apply(x.movedim(dim, -1)).movedim(-1, dim)

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
        out, mean, var = F.BatchNormFunction.apply(x, weight, bias, eps)
        return (
            out,
            reference.running_stat(running_mean.detach(), mean, momentum),
            reference.running_stat(running_var.detach(), var, momentum),
        )

    def batch_norm_frozen(
        self, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float
    ) -> Tensor:
        """(x − mean)·(1 / sqrt(var + eps))·weight + bias per channel: correctly rounded
        elementwise steps in that order (a broadcast forward sums nothing), the square root the
        contract's. Evaluation only: no gradient is defined through it."""
        scale = 1.0 / reference.sqrt32(var + eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean.view(shape)) * scale.view(shape) * weight.view(shape) + bias.view(shape)

    def avg_pool2d(self, x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        """Windows that do not overlap only (stride >= kernel): each input's gradient is then one
        value, never a sum."""
        if stride[0] < kernel[0] or stride[1] < kernel[1]:
            raise ValueError(f"repro avg_pool2d needs stride >= kernel, not {stride} < {kernel}")
        return F.AvgPool2dFunction.apply(x, tuple(kernel), tuple(stride))

    def global_avg_pool(self, x: Tensor) -> Tensor:
        """The average pool whose one window is the whole (row-major) spatial extent."""
        if x.dim() == 4:
            size = (x.shape[2], x.shape[3])
            return F.AvgPool2dFunction.apply(x, size, size)
        flat = x.reshape(x.shape[0], x.shape[1], 1, -1)
        size = (1, flat.shape[3])
        out = F.AvgPool2dFunction.apply(flat, size, size)
        return out.reshape(*x.shape[:2], *([1] * (x.dim() - 2)))

    def causal_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.CausalAttentionFunction.apply(q, k, v)

    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.CrossEntropyFunction.apply(logits, targets)

    def mse_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.MSELossFunction.apply(prediction, target)

    def sgd_update(
        self,
        param: Tensor,
        grad: Tensor,
        momentum_buffer: Tensor,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> tuple[Tensor, Tensor]:
        return get_backend(param.device).sgd_update(
            param, grad, momentum_buffer, lr, momentum, weight_decay
        )

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
        scalars = reference.adamw_scalars(step, lr, beta1, beta2, eps, weight_decay)
        return get_backend(param.device).adamw_update(param, grad, exp_avg, exp_avg_sq, *scalars)


REPRO_OPS = ReproOps()
