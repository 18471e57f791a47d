"""The repro profile's arithmetic contract, executable: pure torch, any device, slow.

Every function here has the name and signature of one in the compiled CPU kernels
(`protocol/repro/csrc`, module `protocol.repro._fixed_order`) and returns the same bits; the tests
check that on random inputs, so this file is what a new backend (CUDA, another CPU) must match.
Only operations whose result IEEE 754 fixes are used: elementwise + − × ÷ sqrt on float32 (each one
correctly rounded, never contracted), float64 arithmetic where noted, selects, comparisons, bit
operations, `amax` (exact in any order). Two compound rules define every reduction:

- **dot** — the terms of a dot product in chunks of `CHAIN` consecutive indices; within a chunk a
  chain of fused multiply-adds (one rounding each) starting from the bias (first chunk) or +0;
  chunk results added left to right. `fma32` emulates the fused multiply-add exactly.
- **sum16** — lane l takes elements l, l+16, l+32, … added left to right from +0; the 16 lanes
  are then folded pairwise (l += l+8, l += l+4, l += l+2, l += l+1).
"""

import math
import struct

import torch
from torch import Tensor

CHAIN = 64
LANES = 16


def f32(value: float) -> float:
    """`value` rounded to the nearest float32 (as C's (float) cast), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


# --- the two reduction rules -------------------------------------------------------------------


def fma32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Correctly rounded float32 a·b + c (broadcasting), from float64 operations.

    a·b is exact in float64 (24 + 24 bits); TwoSum gives the exact error of the float64 sum;
    nudging the sum to the neighbour with an odd last bit when it is inexact ("round to odd") makes
    the final rounding to float32 correct, because float64 carries more than 24 + 2 bits.
    """
    product = a.double() * b.double()
    addend = c.double()
    total = product + addend
    virtual = total - product
    error = (product - (total - virtual)) + (addend - virtual)
    bits = total.view(torch.int64)
    inexact = (error != 0) & torch.isfinite(total) & torch.isfinite(error) & ((bits & 1) == 0)
    away = (error > 0) == (total > 0)  # the exact value lies further from zero than `total`
    nudged = torch.where(inexact, torch.where(away, bits + 1, bits - 1), bits)
    return nudged.view(torch.float64).float()


def sqrt32(x: Tensor) -> Tensor:
    """Correctly rounded float32 square root. (torch.sqrt on CPU goes through MKL's vector math,
    which is within an ulp but not correctly rounded, and dispatches on the CPU it runs on.)

    A float64 square root is within an ulp of the answer after rounding to float32; one check
    against the squares of the two neighbouring midpoints — 25-bit numbers, whose squares are exact
    in float64 and never equal a float32 — moves it to the correctly rounded neighbour.
    """
    candidate = torch.sqrt(x.double()).float()
    bits = candidate.view(torch.int32)
    below, above = (bits - 1).view(torch.float32), (bits + 1).view(torch.float32)
    wide, c64 = x.double(), candidate.double()
    low_mid = (c64 + below.double()) * 0.5
    high_mid = (c64 + above.double()) * 0.5
    fix = (candidate > 0) & torch.isfinite(candidate)
    result = torch.where(fix & (wide < low_mid * low_mid), below, candidate)
    return torch.where(fix & (wide > high_mid * high_mid), above, result)


def _sum16_last(x: Tensor) -> Tensor:
    n = x.shape[-1]
    groups = -(-n // LANES)
    padded = torch.cat([x, x.new_zeros((*x.shape[:-1], groups * LANES - n))], dim=-1)
    padded = padded.reshape(*x.shape[:-1], groups, LANES)
    acc = x.new_zeros((*x.shape[:-1], LANES))
    for g in range(groups):
        acc = acc + padded[..., g, :]
    for half in (8, 4, 2):
        acc = acc[..., :half] + acc[..., half : 2 * half]
    return acc[..., 0] + acc[..., 1]


def sum16_rows(x: Tensor) -> Tensor:
    """sum16 of every last-dimension row: shape x.shape[:-1]."""
    return _sum16_last(x)


def sum16_cols(x: Tensor) -> Tensor:
    """sum16 over all leading dimensions, per column: shape (x.shape[-1],)."""
    return _sum16_last(x.reshape(-1, x.shape[-1]).t())


def segment_sum(values: Tensor, index: Tensor, segments: int) -> Tensor:
    """out[s] = sum16 of the rows i (ascending) with index[i] = s."""
    out = values.new_zeros((segments, values.shape[1]))
    for s in index.unique().tolist():
        out[s] = sum16_cols(values[index == s])
    return out


def matmul(a: Tensor, b: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """(..., M, K) @ (..., K, N) by the dot rule; `bias` (N,) starts every dot product."""
    k = a.shape[-1]
    shape = (*a.shape[:-1], b.shape[-1])
    result = bias.expand(shape).clone() if bias is not None else a.new_zeros(shape)
    for start in range(0, k, CHAIN):
        acc = result if start == 0 else a.new_zeros(shape)
        for i in range(start, min(k, start + CHAIN)):
            acc = fma32(a[..., :, i : i + 1], b[..., i : i + 1, :], acc)
        result = acc if start == 0 else result + acc
    if out is None:
        return result
    return out.copy_(result)


# --- transcendental functions ------------------------------------------------------------------

EXP_LOW = -87.0
INV_LN2 = f32(1.4426950408889634)
LN2_HIGH = 0.693359375
LN2_LOW = f32(-2.12194440e-4)
ROUND_MAGIC = 12582912.0  # 1.5·2**23: (t + M) − M rounds t half to even
EXP_C = [f32(1.0 / math.factorial(i)) for i in range(8)]
SQRT2 = math.sqrt(2.0)
LN2 = math.log(2.0)


def exp_nonpositive(x: Tensor) -> Tensor:
    """e**x for x ≤ 0 (or NaN): 2**n · P(x − n·ln2), P the degree-7 Taylor polynomial (Horner),
    n = x/ln2 rounded half to even, ln2 in two parts (Cody–Waite); below −87: +0."""
    under = x < EXP_LOW
    xc = torch.where(under, torch.full_like(x, EXP_LOW), x)
    n = (xc * INV_LN2 + ROUND_MAGIC) - ROUND_MAGIC
    r = xc - n * LN2_HIGH
    r = r - n * LN2_LOW
    p = r * EXP_C[7] + EXP_C[6]
    for c in reversed(EXP_C[:6]):
        p = p * r + c
    whole = torch.where(n == n, n, torch.zeros_like(n))
    scale = ((whole.to(torch.int32) + 127) << 23).view(torch.float32)
    return torch.where(under, torch.zeros_like(x), p * scale)


def log(x: Tensor) -> Tensor:
    """ln x for positive normal float32 x (NaN stays NaN), in float64: exponent bits and
    2·atanh(s), 6 terms."""
    x64 = x.double()
    bits = x64.view(torch.int64)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = ((bits & ((1 << 52) - 1)) | (1023 << 52)).view(torch.float64)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1, e)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    series = s2 * (1.0 / 11) + (1.0 / 9)
    for c in (1.0 / 7, 1.0 / 5, 1.0 / 3, 1.0):
        series = series * s2 + c
    result = ((s * 2.0) * series + e.double() * LN2).float()
    return torch.where(x.isnan(), x, result)  # a NaN's payload must never pass for a mantissa


def tanh(x: Tensor) -> Tensor:
    """sign(x)·(1 − e)/(1 + e), e = exp(−2|x|); tanh(−0) = −0."""
    e = exp_nonpositive(x.abs() * -2.0)
    return torch.copysign((1.0 - e) / (1.0 + e), x)


# --- fused operations, as compositions ---------------------------------------------------------

GELU_A = f32(0.044715)
GELU_3A = f32(3.0 * 0.044715)
GELU_C = f32(0.7978845608028654)  # sqrt(2/pi)


def gelu_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    """GELU, tanh approximation: (output, tanh of the inner term) — the latter for backward."""
    inner = ((x * x) * x) * GELU_A
    inner = (inner + x) * GELU_C
    t = tanh(inner)
    return ((t + 1.0) * x) * 0.5, t


def gelu_backward(grad: Tensor, x: Tensor, t: Tensor) -> Tensor:
    inner_grad = ((x * x) * GELU_3A + 1.0) * GELU_C
    slope = (((1.0 - t * t) * x) * 0.5) * inner_grad
    return ((t + 1.0) * 0.5 + slope) * grad


def layer_norm_forward(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(output, normalized, 1/std per row (..., 1))."""
    d = x.shape[-1]
    centered = x - (sum16_rows(x) / d).unsqueeze(-1)
    variance = (sum16_rows(centered * centered) / d).unsqueeze(-1)
    inv_std = torch.reciprocal(sqrt32(variance + f32(eps)))
    normalized = centered * inv_std
    return normalized * weight + bias, normalized, inv_std


def layer_norm_backward(
    grad: Tensor, normalized: Tensor, inv_std: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_bias)."""
    d = normalized.shape[-1]
    grad_norm = grad * weight
    mean_grad = (sum16_rows(grad_norm) / d).unsqueeze(-1)
    mean_proj = (sum16_rows(grad_norm * normalized) / d).unsqueeze(-1)
    grad_x = ((grad_norm - mean_grad) - normalized * mean_proj) * inv_std
    return grad_x, sum16_cols(grad * normalized), sum16_cols(grad)


def _row_max(x: Tensor) -> Tensor:
    """Row maximum ignoring NaN, −0 made +0 (the sign of a zero maximum is not fixed by order)."""
    return torch.where(x.isnan(), torch.full_like(x, -math.inf), x).amax(-1, keepdim=True) + 0.0


def softmax_(x: Tensor, scale: float, causal: bool) -> Tensor:
    """In place: softmax of x·scale per last-dim row; causal masks j > i of each square block."""
    scaled = x * f32(scale)
    if causal:
        n = x.shape[-1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        scaled = torch.where(future, torch.full_like(scaled, -math.inf), scaled)
    weights = exp_nonpositive(scaled - _row_max(scaled))
    return x.copy_(weights / sum16_rows(weights).unsqueeze(-1))


def softmax_backward(grad_probs: Tensor, probs: Tensor, scale: float) -> Tensor:
    dot = sum16_rows(grad_probs * probs).unsqueeze(-1)
    return ((grad_probs - dot) * probs) * f32(scale)


def cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of (N, C) logits: (loss, probabilities); loss = sum16(row losses) / N."""
    shifted = logits - _row_max(logits)
    picked = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weights = exp_nonpositive(shifted)
    total = sum16_rows(weights)
    losses = log(total) - picked
    loss = sum16_rows(losses.unsqueeze(0))[0] / targets.numel()
    return loss, weights / total.unsqueeze(-1)


def cross_entropy_backward(probs: Tensor, targets: Tensor, grad: Tensor) -> Tensor:
    one_hot = torch.zeros_like(probs)
    one_hot[torch.arange(targets.numel(), device=targets.device), targets] = 1.0
    return (probs - one_hot) * (grad / targets.numel())


# --- optimizer updates --------------------------------------------------------------------------
# The formulas of `protocol.ops.NativeOps` (so a float32 cast of every Python scalar, as torch does
# when one meets a float32 tensor), with a correctly rounded square root, and every NaN written as
# the canonical quiet NaN: payloads differ between CPUs and devices, and these updates write the
# whole training state.


def canonical_nan(x: Tensor) -> Tensor:
    return torch.where(x.isnan(), torch.full_like(x, math.nan), x)


def adamw_scalars(
    step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
) -> tuple[float, ...]:
    """(decay, β1, 1 − β1, β2, 1 − β2, √(1 − β2**t), ε, lr / (1 − β1**t)) in float64."""
    return (
        1.0 - lr * weight_decay,
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        math.sqrt(1.0 - beta2**step),
        eps,
        lr / (1.0 - beta1**step),
    )


def adamw_update(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *scalars: float
) -> tuple[Tensor, Tensor, Tensor]:
    decay, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_correction2, eps, step_size = (
        f32(s) for s in scalars
    )
    p = param * decay
    m = exp_avg * beta1 + grad * one_minus_beta1
    v = exp_avg_sq * beta2 + (grad * grad) * one_minus_beta2
    denom = sqrt32(v) / sqrt_correction2 + eps
    return canonical_nan(p - (m / denom) * step_size), canonical_nan(m), canonical_nan(v)


def sgd_update(
    param: Tensor, grad: Tensor, buffer: Tensor, lr: float, momentum: float, weight_decay: float
) -> tuple[Tensor, Tensor]:
    g = grad + param * f32(weight_decay) if weight_decay else grad
    b = buffer * f32(momentum) + g
    return canonical_nan(param - b * f32(lr)), canonical_nan(b)


# --- convolution gathers -----------------------------------------------------------------------


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _patch_views(padded: Tensor, kh: int, kw: int, stride: int, ho: int, wo: int) -> list[Tensor]:
    """The kh·kw strided (N, Ho, Wo, C) views of a padded channels-last input, in kernel order."""
    return [
        padded[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]


def im2col(x: Tensor, kh: int, kw: int, stride: int, padding: int) -> Tensor:
    """Channels-last (N, H, W, C) → (N·Ho·Wo, kh·kw·C) patches (kernel row, kernel column,
    channel), zeros outside: copies only."""
    n, h, w, c = x.shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    padded = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding))
    cols = torch.stack(_patch_views(padded, kh, kw, stride, ho, wo), dim=3)  # (N, Ho, Wo, kh·kw, C)
    return cols.reshape(n * ho * wo, kh * kw * c)


def col2im(cols: Tensor, shape: list[int], kh: int, kw: int, stride: int, padding: int) -> Tensor:
    """Adjoint of im2col, channels-last: each input position = +0 plus its patches' entries in
    kernel order."""
    n, h, w, c = shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    patches = cols.reshape(n, ho, wo, kh * kw, c)
    padded = cols.new_zeros((n, h + 2 * padding, w + 2 * padding, c))
    for index, view in enumerate(_patch_views(padded, kh, kw, stride, ho, wo)):
        view += patches[:, :, :, index]
    return padded[:, padding : padding + h, padding : padding + w].contiguous()


def conv2d_input_grad(
    grad_rows: Tensor, w_rows: Tensor, shape: list[int], kh: int, kw: int, stride: int, padding: int
) -> Tensor:
    """A convolution's input gradient, channels-last: col2im of (N·Ho·Wo, O) @ (O, kh·kw·C)."""
    return col2im(matmul(grad_rows, w_rows), shape, kh, kw, stride, padding)


def relu(x: Tensor) -> Tensor:
    """A select: x where x > 0, else +0 (NaN → +0); max(x, 0) leaves the sign of zero open."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_backward(grad: Tensor, out: Tensor) -> Tensor:
    return torch.where(out > 0, grad, torch.zeros_like(grad))


# --- ONNX layers: tanh and sigmoid backwards, average pooling, batch normalisation -------------


def tanh_backward(grad: Tensor, t: Tensor) -> Tensor:
    """grad·(1 − t·t), t = tanh(x) from the forward."""
    return grad * (1.0 - t * t)


def sigmoid(x: Tensor) -> Tensor:
    """(x ≥ 0 ? 1 : e) / (1 + e), e = exp(−|x|): the exponent is never positive, so nothing
    overflows; below x = −87 the result is +0 (exp's flush), above 87 exactly 1."""
    e = exp_nonpositive(-x.abs())
    return torch.where(x >= 0, torch.ones_like(x), e) / (1.0 + e)


def sigmoid_backward(grad: Tensor, s: Tensor) -> Tensor:
    """grad·((1 − s)·s), s = sigmoid(x) from the forward."""
    return grad * ((1.0 - s) * s)


def avg_pool2d(x: Tensor, kh: int, kw: int, sh: int, sw: int) -> Tensor:
    """Channels-last (N, H, W, C) → (N, Ho, Wo, C), no padding, stride ≥ kernel (windows that do
    not overlap): sum16 of each window's kh·kw positions in row-major order, ÷ kh·kw."""
    if sh < kh or sw < kw:
        raise ValueError("the fixed-order average pool needs stride >= kernel")
    n, h, w, c = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    windows = [
        x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return _sum16_last(torch.stack(windows, dim=-1)) / float(kh * kw)


def avg_pool2d_backward(grad: Tensor, h: int, w: int, kh: int, kw: int, sh: int, sw: int) -> Tensor:
    """The adjoint, channels-last: every input in a window gets that window's gradient ÷ kh·kw
    (a copy: the windows do not overlap), every other input +0."""
    n, ho, wo, c = grad.shape
    out = grad.new_zeros((n, h, w, c))
    share = grad / float(kh * kw)
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] = share
    return out


def batch_norm_forward(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Training-mode batch norm of the rows of x (M, C) — a channels-last view of (N, C, …), so a
    channel's elements are in (n, position) order: per column, mean = sum16(x)/M, c = x − mean,
    v = sum16(c·c), inv_std = 1/sqrt(v/M + eps), normalized = c·inv_std, out = normalized·w + b.
    Returns (out, normalized, mean, inv_std, v/(M − 1)), the last the unbiased variance that the
    running statistic follows (torch's convention)."""
    m = x.shape[0]
    mean = sum16_cols(x) / m
    centered = x - mean
    total = sum16_cols(centered * centered)
    inv_std = torch.reciprocal(sqrt32(total / m + f32(eps)))
    normalized = centered * inv_std
    return normalized * weight + bias, normalized, mean, inv_std, total / (m - 1)


def batch_norm_backward(
    grad: Tensor, normalized: Tensor, inv_std: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_bias) for (M, C) rows: grad_bias = sum16(g), grad_weight =
    sum16(g·normalized) per column; grad_x = ((g − grad_bias/M) − normalized·(grad_weight/M))·
    (w·inv_std)."""
    m = grad.shape[0]
    grad_b = sum16_cols(grad)
    grad_w = sum16_cols(grad * normalized)
    grad_x = ((grad - grad_b / m) - normalized * (grad_w / m)) * (weight * inv_std)
    return grad_x, grad_w, grad_b


def running_stat(running: Tensor, batch: Tensor, momentum: float) -> Tensor:
    """running·(1 − momentum) + batch·momentum, both scalars cast to float32 (torch's momentum:
    the batch statistic's weight, = 1 − ONNX's momentum)."""
    return running * f32(1.0 - momentum) + batch * f32(momentum)
