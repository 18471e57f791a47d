"""Autograd functions of the repro profile: forward *and* backward on the fixed-order kernels.

Torch's own backward formulas reduce with `sum`, whose order depends on the thread count, so every
op that reduces has an explicit backward here, built only from the contract's kernels (see
`protocol.repro.reference`). Ops that are elementwise without broadcasting (dropout's mask,
residual adds) keep torch's autograd: their gradients are elementwise too.
"""

import math

import torch
from torch import Tensor
from torch.autograd import Function

from protocol.repro.backend import get_backend


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


class LinearFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = get_backend(x.device).matmul(_rows(x), weight.t(), bias)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        kernels, g = get_backend(grad.device), _rows(grad)
        grad_x = kernels.matmul(g, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = kernels.matmul(g.t(), _rows(x)) if ctx.needs_input_grad[1] else None
        grad_b = kernels.sum16_cols(g) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class Conv2dFunction(Function):
    """Channels-last im2col patches @ weightᵀ (columns in kernel row, kernel column, channel
    order); the input gradient is col2im of the patch gradients (computed tap by tap). The output
    is an NCHW view of channels-last memory, which the next convolution reads without a copy."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int
    ) -> Tensor:
        kernels = get_backend(x.device)
        out_channels, _, kh, kw = weight.shape
        channels_last = x.permute(0, 2, 3, 1).contiguous()  # free when x is a channels-last view
        cols = kernels.im2col(channels_last, kh, kw, stride, padding)
        w_rows = weight.permute(0, 2, 3, 1).reshape(out_channels, -1)  # (O, kh·kw·C)
        ctx.save_for_backward(cols, w_rows)
        ctx.geometry = (list(channels_last.shape), tuple(weight.shape), kh, kw, stride, padding)
        ctx.has_bias = bias is not None
        out = kernels.matmul(cols, w_rows.t(), bias)
        n, h, w, _ = channels_last.shape
        ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
        return out.reshape(n, ho, wo, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cols, w_rows = ctx.saved_tensors
        shape, weight_shape, kh, kw, stride, padding = ctx.geometry
        kernels = get_backend(grad.device)
        g = grad.permute(0, 2, 3, 1).reshape(-1, weight_shape[0])  # (N·Ho·Wo, O)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.conv2d_input_grad(g, w_rows, shape, kh, kw, stride, padding).permute(
                0, 3, 1, 2
            )
        if ctx.needs_input_grad[1]:
            out_channels, channels = weight_shape[0], weight_shape[1]
            grad_w = (
                kernels.matmul(g.t(), cols)
                .reshape(out_channels, kh, kw, channels)
                .permute(0, 3, 1, 2)
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = kernels.sum16_cols(g)
        return grad_x, grad_w, grad_b, None, None


def _from_output(kernel: str, doc: str) -> type[Function]:
    """An elementwise op whose backward reads only its output: the backend's `kernel` and
    `kernel_backward(grad, out)`."""

    class OutputFunction(Function):
        @staticmethod
        def forward(ctx, x: Tensor) -> Tensor:
            out = getattr(get_backend(x.device), kernel)(x)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad: Tensor):
            (out,) = ctx.saved_tensors
            return getattr(get_backend(grad.device), f"{kernel}_backward")(grad, out)

    OutputFunction.__name__ = OutputFunction.__qualname__ = f"{kernel.title()}Function"
    OutputFunction.__doc__ = doc
    return OutputFunction


ReluFunction = _from_output(
    "relu", "ReLU as a select, on the storage of any dense layout (a channels-last view included)."
)


class EmbeddingFunction(Function):
    """Lookup forward; backward a segment sum16 of the output gradients per vocabulary row."""

    @staticmethod
    def forward(ctx, indices: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(indices)
        ctx.vocab = weight.shape[0]
        return weight[indices]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (indices,) = ctx.saved_tensors
        return None, get_backend(grad.device).segment_sum(
            _rows(grad), indices.reshape(-1), ctx.vocab
        )


class LayerNormFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        out, normalized, inv_std = get_backend(x.device).layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(normalized, inv_std, weight)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        normalized, inv_std, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = get_backend(grad.device).layer_norm_backward(
            grad, normalized, inv_std, weight
        )
        return grad_x, grad_w, grad_b, None


class GeluTanhFunction(Function):
    """GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out, t = get_backend(x.device).gelu_forward(x)
        ctx.save_for_backward(x, t)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, t = ctx.saved_tensors
        return get_backend(grad.device).gelu_backward(grad, x, t)


class CausalAttentionFunction(Function):
    """softmax(q kᵀ/√d + causal mask) v for (B, H, T, D) views (strided, e.g. split from qkv)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        kernels = get_backend(q.device)
        scale = 1.0 / math.sqrt(q.shape[-1])
        probs = kernels.softmax_(kernels.matmul(q, k.transpose(-2, -1)), scale, True)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        batch, heads, length, width = q.shape
        # Written as (B, T, H, D), the layout the model merges heads in: its reshape is then free.
        out = q.new_empty((batch, length, heads, width)).transpose(1, 2)
        return kernels.matmul(probs, v, None, out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, probs = ctx.saved_tensors
        kernels = get_backend(grad.device)
        grad_v = kernels.matmul(probs.transpose(-2, -1), grad)
        grad_scores = kernels.softmax_backward(
            kernels.matmul(grad, v.transpose(-2, -1)), probs, ctx.scale
        )
        grad_q = kernels.matmul(grad_scores, k)
        grad_k = kernels.matmul(grad_scores.transpose(-2, -1), q)
        return grad_q, grad_k, grad_v


class CrossEntropyFunction(Function):
    """Mean cross-entropy of (N, C) logits against int64 targets."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        loss, probs = get_backend(logits.device).cross_entropy(logits, targets)
        ctx.save_for_backward(probs, targets)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        probs, targets = ctx.saved_tensors
        return get_backend(grad.device).cross_entropy_backward(probs, targets, grad), None


class MSELossFunction(Function):
    """Mean squared error: sum16 of the squared differences, over the element count."""

    @staticmethod
    def forward(ctx, prediction: Tensor, target: Tensor) -> Tensor:
        diff = prediction - target
        ctx.save_for_backward(diff)
        total = get_backend(diff.device).sum16_rows((diff * diff).reshape(1, -1))
        return total[0] / diff.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (diff,) = ctx.saved_tensors
        return diff * (grad * (2.0 / diff.numel())), None


TanhFunction = _from_output(
    "tanh", "tanh from exp (the contract's polynomial); backward grad·(1 − t²) from the output."
)


SigmoidFunction = _from_output(
    "sigmoid", "sigmoid from exp of −|x| (stable); backward grad·(1 − s)·s from the output."
)


class SoftmaxFunction(Function):
    """Softmax of every last-dim row: the attention kernel's softmax with scale 1 (x·1 = x), no
    mask; backward the attention's softmax backward, scale 1."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        probs = get_backend(x.device).softmax_(
            x.clone(memory_format=torch.contiguous_format), 1.0, False
        )
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad: Tensor):
        (probs,) = ctx.saved_tensors
        return get_backend(grad.device).softmax_backward(grad, probs, 1.0)


class AvgPool2dFunction(Function):
    """Average pool of (N, C, H, W), no padding, stride ≥ kernel, computed channels-last (free
    for a convolution's output); the output is an NCHW view of channels-last memory."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:
        ctx.geometry = (x.shape[2], x.shape[3], *kernel, *stride)
        out = get_backend(x.device).avg_pool2d(x.permute(0, 2, 3, 1), *kernel, *stride)
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_x = get_backend(grad.device).avg_pool2d_backward(
            grad.permute(0, 2, 3, 1), *ctx.geometry
        )
        return grad_x.permute(0, 3, 1, 2), None, None


def _channel_rows(x: Tensor) -> Tensor:
    """(N, C, …) as the (N·…, C) rows of its channels-last view (free when x is one)."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


class BatchNormFunction(Function):
    """Training-mode batch norm of (N, C, …) over every axis but C, on the channels-last rows.
    Returns (output, batch mean, unbiased batch variance); the statistics are not differentiable
    (the running statistics they update are state, not parameters)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        kernels = get_backend(x.device)
        out, normalized, mean, inv_std, var = kernels.batch_norm_forward(
            _channel_rows(x), weight, bias, eps
        )
        ctx.save_for_backward(normalized, inv_std, weight)
        ctx.mark_non_differentiable(mean, var)
        ctx.channels_last_shape = x.movedim(1, -1).shape
        return out.reshape(ctx.channels_last_shape).movedim(-1, 1), mean, var

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_mean, _grad_var):
        normalized, inv_std, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = get_backend(grad.device).batch_norm_backward(
            _channel_rows(grad), normalized, inv_std, weight
        )
        return grad_x.reshape(ctx.channels_last_shape).movedim(-1, 1), grad_w, grad_b, None
