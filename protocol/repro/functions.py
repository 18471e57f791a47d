"""Autograd functions whose forward *and* backward run on the fixed-order kernels.

Torch's own backward formulas reduce with `sum` (bias gradients, broadcast operands, softmax),
whose order depends on the thread count, so every op that reduces gets an explicit backward here.
Ops that are purely elementwise without broadcasting (ReLU as a select, dropout's mask) keep
torch's autograd: their gradients are elementwise too.
"""

import functools
import math

import torch
from torch import Tensor
from torch.autograd import Function

from protocol.repro import kernels as K

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


class LinearFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = K.exact_matmul(_rows(x), weight.t())
        if bias is not None:
            out += bias
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        g = _rows(grad)
        grad_x = K.exact_matmul(g, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = K.exact_matmul(g.t(), _rows(x)) if ctx.needs_input_grad[1] else None
        grad_b = K.fixed_sum_rows(g) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class Conv2dFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
        out_channels, _, kh, kw = weight.shape
        cols = K.im2col(x, (kh, kw), stride, padding)
        ctx.save_for_backward(cols, weight)
        ctx.geometry = (tuple(x.shape), (kh, kw), stride, padding)
        ctx.has_bias = bias is not None
        out = K.exact_matmul(cols, weight.reshape(out_channels, -1).t())
        if bias is not None:
            out += bias
        n, _, h, w = x.shape
        ho, wo = K.compute_output_size(h, kh, stride, padding), K.compute_output_size(w, kw, stride, padding)
        return out.reshape(n, ho, wo, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cols, weight = ctx.saved_tensors
        shape, kernel, stride, padding = ctx.geometry
        g = grad.permute(0, 2, 3, 1).reshape(-1, weight.shape[0])  # (N·Ho·Wo, O)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = K.exact_matmul(g, weight.reshape(weight.shape[0], -1))
            grad_x = K.col2im(grad_cols, shape, kernel, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = K.exact_matmul(g.t(), cols).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = K.fixed_sum_rows(g)
        return grad_x, grad_w, grad_b, None, None


class EmbeddingFunction(Function):
    """Lookup forward; backward an exact segment sum (float32) or one-hot(indices)ᵀ @ grad (float64)."""

    @staticmethod
    def forward(ctx, indices: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(indices)
        ctx.vocab = weight.shape[0]
        return weight[indices]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (indices,) = ctx.saved_tensors
        rows = _rows(grad)
        if rows.dtype == torch.float32:
            return None, K.exact_segment_sum(rows, indices.reshape(-1), ctx.vocab)
        flat = indices.reshape(-1)
        one_hot = torch.zeros((flat.numel(), ctx.vocab), dtype=grad.dtype, device=grad.device)
        one_hot[torch.arange(flat.numel(), device=flat.device), flat] = 1.0
        return None, K.exact_matmul(one_hot.t(), rows)


class LayerNormFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        d = x.shape[-1]
        centered = x - K.fixed_sum(x, -1, keepdim=True).div_(d)
        variance = K.fixed_sum(centered * centered, -1, keepdim=True).div_(d)
        inv_std = torch.div(1.0, variance.add_(eps).sqrt_())  # sqrt, / correctly rounded; rsqrt is not
        normalized = centered.mul_(inv_std)
        ctx.save_for_backward(normalized, inv_std, weight)
        return (normalized * weight).add_(bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        normalized, inv_std, weight = ctx.saved_tensors
        d = normalized.shape[-1]
        grad_norm = grad * weight
        mean_grad = K.fixed_sum(grad_norm, -1, keepdim=True).div_(d)
        projection = grad_norm * normalized
        mean_proj = K.fixed_sum(projection, -1, keepdim=True).div_(d)
        grad_x = grad_norm.sub_(mean_grad).sub_(torch.mul(normalized, mean_proj, out=projection)).mul_(inv_std)
        grad_w = K.fixed_sum_rows(grad * normalized)
        grad_b = K.fixed_sum_rows(grad)
        return grad_x, grad_w, grad_b, None


class GeluTanhFunction(Function):
    """GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in place where the
    intermediate is ours (each op still one correctly rounded elementwise step)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        inner = x * x
        inner *= x
        inner *= GELU_A
        inner += x
        inner *= GELU_C
        t = K.tanh(inner)
        ctx.save_for_backward(x, t)
        out = t + 1.0
        out *= x
        return out.mul_(0.5)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, t = ctx.saved_tensors
        inner_grad = x * x
        inner_grad *= 3.0 * GELU_A
        inner_grad += 1.0
        inner_grad *= GELU_C
        slope = t * t
        slope.neg_().add_(1.0)  # 1 − t²
        slope *= x
        slope *= 0.5
        slope *= inner_grad
        local = t + 1.0
        local *= 0.5
        local += slope
        return local.mul_(grad)


@functools.lru_cache(maxsize=16)
def _causal_mask(length: int, device: torch.device) -> Tensor:
    """True above the diagonal (future positions); built once per length (never written to)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu_(1)


class CausalAttentionFunction(Function):
    """softmax(q kᵀ/√d + causal mask) v with exact matmuls and a fixed-tree softmax."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = K.exact_matmul(q, k.transpose(-2, -1)).mul_(scale)
        length = q.shape[-2]
        scores.masked_fill_(_causal_mask(length, q.device), -math.inf)
        scores -= scores.amax(dim=-1, keepdim=True)  # max is exact in any order
        weights = K.exp_nonpositive(scores, consume=True)
        probs = weights.div_(K.fixed_sum(weights, -1, keepdim=True))
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        return K.exact_matmul(probs, v)

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, probs = ctx.saved_tensors
        grad_v = K.exact_matmul(probs.transpose(-2, -1), grad)
        grad_probs = K.exact_matmul(grad, v.transpose(-2, -1))
        grad_scores = grad_probs - K.fixed_sum(grad_probs * probs, -1, keepdim=True)
        grad_scores.mul_(probs).mul_(ctx.scale)
        grad_q = K.exact_matmul(grad_scores, k)
        grad_k = K.exact_matmul(grad_scores.transpose(-2, -1), q)
        return grad_q, grad_k, grad_v


class CrossEntropyFunction(Function):
    """Mean cross-entropy of (N, C) logits against int64 targets."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        shifted = logits - logits.amax(dim=-1, keepdim=True)
        picked = shifted.gather(-1, targets.unsqueeze(-1))
        weights = K.exp_nonpositive(shifted, consume=True)
        total = K.fixed_sum(weights, -1, keepdim=True)
        losses = K.log(total).sub_(picked)
        ctx.save_for_backward(weights.div_(total), targets)
        return K.exact_total(losses) / targets.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        probs, targets = ctx.saved_tensors
        grad_logits = probs.clone()
        rows = torch.arange(targets.numel(), device=targets.device)
        grad_logits[rows, targets] -= 1.0
        return grad_logits.mul_(grad / targets.numel()), None


class MSELossFunction(Function):
    @staticmethod
    def forward(ctx, prediction: Tensor, target: Tensor) -> Tensor:
        diff = prediction - target
        ctx.save_for_backward(diff)
        return K.exact_total(diff * diff) / diff.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (diff,) = ctx.saved_tensors
        return diff * (grad * (2.0 / diff.numel())), None
