"""Backend-neutral fixed-order kernels: the only arithmetic the repro profile does.

Every function here is built from operations whose result is fixed by IEEE 754 whatever the thread
count, vector width or device: elementwise add / multiply / divide / sqrt (each correctly rounded),
truncation, comparisons and selects, bit-level reinterpretation, `amax` (a max is exact, so its
order cannot matter) and fp64 matrix products of small integers (exact, so their order cannot
matter either — see `exact_matmul`). Nothing calls `sum`, `mean`, `softmax`, `exp`, `log`, `tanh`
or a float32 BLAS, whose results depend on threads, ISA or the math library's CPU dispatch.

The kernels take and return `torch.Tensor`s and never name a device, so the same code runs on a
CUDA tensor; a CUDA backend only has to keep the same rules (no fused multiply-add across ops,
IEEE division and sqrt, which are the CUDA defaults for separate elementwise kernels).
"""

import math

import torch
from torch import Tensor

FP64_MANTISSA_BITS = 53
# Slices per operand: enough `beta`-bit integer slices to cover the input's own mantissa.
SLICES = {torch.float32: 2, torch.float64: 3}
# Above this many terms per dot product, K is cut into blocks summed in a fixed order, so each
# slice keeps at least 20 bits.
MAX_EXACT_K = 4096


# --- reductions --------------------------------------------------------------------------------


def fixed_sum(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """Sum along `dim` by a fixed pairwise tree: pad to a power of two, add halves elementwise.

    Each level is one elementwise add of two slices, so the order of every addition is decided
    by the shape alone. Padding zeros turn an all-(-0) sum into +0, identically everywhere.
    """
    dim = dim % x.dim()
    n = x.shape[dim]
    if n == 0:
        shape = list(x.shape)
        shape[dim] = 1
        out = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return out if keepdim else out.squeeze(dim)
    width = 1 << (n - 1).bit_length()
    if width != n:
        pad_shape = list(x.shape)
        pad_shape[dim] = width - n
        x = torch.cat([x, torch.zeros(pad_shape, dtype=x.dtype, device=x.device)], dim=dim)
    while width > 1:
        width //= 2
        x = x.narrow(dim, 0, width) + x.narrow(dim, width, width)
    return x if keepdim else x.squeeze(dim)


def fixed_sum_rows(x: Tensor) -> Tensor:
    """Sum over every leading dimension: (..., D) → (D,), e.g. a bias gradient."""
    return fixed_sum(x.reshape(-1, x.shape[-1]), 0)


# --- exact matrix product ----------------------------------------------------------------------


def _power_of_two_exponent(m: Tensor) -> Tensor:
    """e with m < 2**e for finite m ≥ 0 in fp64, read from the bits (frexp without a libm)."""
    biased = (m.view(torch.int64) >> 52) & 0x7FF
    # Floor at -1000 so 2**(beta - e) stays finite: fp64 rows below 2**-1000 lose their bits.
    return (biased - 1022).clamp(-1000, 1023)


def _power_of_two(e: Tensor) -> Tensor:
    """2**e as fp64 for integer e in [-1022, 1023], built from the bits: exact by construction."""
    return ((e + 1023) << 52).view(torch.float64)


def _slices(x: Tensor, dim: int, count: int, beta: int) -> tuple[list[Tensor], Tensor]:
    """Cut fp64 x into `count` integer-valued slices of `beta` bits along a shared scale.

    Scale: per vector along `dim`, 2**e with e above its largest magnitude, so x·2**-e ∈ (-1, 1).
    Then x·2**-e ≈ Σ_i slice_i·2**(-beta·(i+1)) with |slice_i| < 2**beta. Every step is an
    exact elementwise operation (power-of-two scaling, trunc, subtraction of a float's own
    truncation).
    """
    exponent = _power_of_two_exponent(x.abs().amax(dim=dim, keepdim=True))
    rest = x * _power_of_two(beta - exponent)
    slices = []
    for i in range(count):
        piece = rest.trunc()
        slices.append(piece)
        if i + 1 < count:
            rest = (rest - piece) * float(2**beta)
    return slices, exponent


def _slice_width(count: int, k: int) -> int:
    """Bits per slice so a level's product, count·k terms each below 2**(2·beta), fits in 2**53."""
    return (FP64_MANTISSA_BITS - math.ceil(math.log2(count * k))) // 2


def _exact_block(a_slices: list[Tensor], b_slices: list[Tensor]) -> list[Tensor]:
    """Integer products by level: level l = Σ_{i+j=l} A_i·B_j, one fp64 matmul each.

    All terms are integers whose partial sums stay below 2**53, so every summation order gives
    the same exact answer — that is why the BLAS may use any threads or vector width here.
    """
    count = len(a_slices)
    levels = []
    for level in range(count):
        left = torch.cat([a_slices[i] for i in range(level + 1)], dim=-1)
        right = torch.cat([b_slices[level - i] for i in range(level + 1)], dim=-2)
        levels.append(torch.matmul(left, right))
    return levels


def exact_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for (..., M, K) @ (..., K, N), bit-identical on any threads, ISA or device.

    Ozaki-style error-free splitting: rows of a and columns of b are scaled by powers of two and
    cut into integer slices; slice products are exact in fp64 (see `_exact_block`); the levels
    are then combined by fixed elementwise steps and rounded once to the input dtype. Elements
    smaller than 2**(-beta·slices) of their row/column maximum are truncated (an absolute error
    far below float32 rounding; see docs/repro.md).
    """
    dtype = a.dtype
    count, k = SLICES[dtype], a.shape[-1]
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if k == 0:
        return torch.matmul(a64, b64).to(dtype)  # all zeros
    block = min(k, MAX_EXACT_K)
    beta = _slice_width(count, block)
    a_slices, a_exp = _slices(a64, -1, count, beta)
    b_slices, b_exp = _slices(b64, -2, count, beta)
    levels = None
    for start in range(0, k, block):  # blocks of K in a fixed order, summed elementwise
        stop = min(k, start + block)
        part = _exact_block([s[..., start:stop] for s in a_slices],
                            [s[..., start:stop, :] for s in b_slices])
        levels = part if levels is None else [x + y for x, y in zip(levels, part, strict=True)]
    combined = levels[-1]
    for level in reversed(levels[:-1]):  # smallest first: one rounding per level
        combined = combined * (2.0**-beta) + level
    scaled = combined * (2.0 ** (-2 * beta)) * _power_of_two(a_exp) * _power_of_two(b_exp)
    return (scaled + 0.0).to(dtype)  # + 0.0 makes an exact -0 into +0, whatever the BLAS did


# --- transcendental functions ------------------------------------------------------------------

LN2 = math.log(2.0)
# ln 2 split (fdlibm's constants) so n·LN2_HIGH is exact for |n| < 2**20: Cody–Waite reduction.
LN2_HIGH = 6.93147180369123816490e-01
LN2_LOW = 1.90821492927058770002e-10
# Taylor degree so the remainder on |r| ≤ ln2/2 is below half an ulp of the dtype.
EXP_DEGREE = {torch.float32: 8, torch.float64: 14}
# exp(x) below these is zero (or subnormal) in the dtype; above, infinity.
EXP_LIMITS = {torch.float32: (-87.0, 88.5), torch.float64: (-707.0, 709.5)}
# (mantissa bits, exponent bias, integer view) to build 2**e from bits in the dtype itself.
FLOAT_LAYOUT = {torch.float32: (23, 127, torch.int32), torch.float64: (52, 1023, torch.int64)}


def _horner(r: Tensor, coefficients: list[float]) -> Tensor:
    result = torch.full_like(r, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = result * r + c  # two separate correctly rounded ops, never an FMA
    return result


def _power_of_two_in(e: Tensor, dtype: torch.dtype) -> Tensor:
    """2**e in `dtype` for integer-valued float e within its normal range, from the bits."""
    mantissa_bits, bias, int_type = FLOAT_LAYOUT[dtype]
    return ((e.to(int_type) + bias) << mantissa_bits).view(dtype)


def exp(x: Tensor) -> Tensor:
    """e**x from +, ×, round and exponent bits: exp(x) = 2**n · P(x − n·ln2).

    Inputs below the dtype's normal range give +0 (softmax of a masked -inf is exactly 0);
    above it, +inf. Error ≈ 1–2 ulp (checked against torch.exp in tests/repro).
    """
    low, high = EXP_LIMITS[x.dtype]
    clamped = x.clamp(low, high)
    n = (clamped * (1.0 / LN2)).round()
    r = (clamped - n * LN2_HIGH) - n * LN2_LOW
    coefficients = [1.0 / math.factorial(i) for i in range(EXP_DEGREE[x.dtype])]
    poly = _horner(r, coefficients)
    # 2**n applied as two factors so neither leaves the dtype's normal exponent range.
    half = (n * 0.5).trunc()
    result = poly * _power_of_two_in(half, x.dtype) * _power_of_two_in(n - half, x.dtype)
    result = torch.where(x < low, torch.zeros_like(result), result)
    result = torch.where(x > high, torch.full_like(result, math.inf), result)
    return torch.where(x.isnan(), x, result)


def log(x: Tensor) -> Tensor:
    """Natural log of positive finite x, in fp64 from exponent bits and an atanh series."""
    x64 = x.to(torch.float64)
    bits = x64.view(torch.int64)
    e = ((bits >> 52) & 0x7FF) - 1023
    mantissa = ((bits & ((1 << 52) - 1)) | (1023 << 52)).view(torch.float64)  # in [1, 2)
    big = mantissa > math.sqrt(2.0)
    mantissa = torch.where(big, mantissa * 0.5, mantissa)
    e = torch.where(big, e + 1, e)
    s = (mantissa - 1.0) / (mantissa + 1.0)  # |s| ≤ 0.172, log m = 2·atanh(s)
    s2 = s * s
    series = _horner(s2, [1.0 / (2 * i + 1) for i in range(12)])
    result = (s * 2.0) * series + e.to(torch.float64) * LN2
    return result.to(x.dtype)


def tanh(x: Tensor) -> Tensor:
    """tanh(x) = sign(x)·(1 − e)/(1 + e), e = exp(−2|x|); absolute error about one ulp of 1."""
    e = exp(x.abs() * -2.0)
    magnitude = (1.0 - e) / (1.0 + e)
    return torch.where(x < 0, -magnitude, magnitude)


# --- convolution as gather + exact matmul ------------------------------------------------------


def compute_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x: Tensor, kernel: tuple[int, int], stride: int, padding: int) -> Tensor:
    """(N, C, H, W) → (N·Ho·Wo, C·kh·kw) patches by strided slicing: pure copies, no arithmetic."""
    n, c, h, w = x.shape
    kh, kw = kernel
    ho, wo = (compute_output_size(h, kh, stride, padding), compute_output_size(w, kw, stride, padding))
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    patches = [padded[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
               for i in range(kh) for j in range(kw)]
    cols = torch.stack(patches, dim=2)  # (N, C, kh·kw, Ho, Wo)
    return cols.permute(0, 3, 4, 1, 2).reshape(n * ho * wo, c * kh * kw)


def col2im(cols: Tensor, shape: tuple[int, ...], kernel: tuple[int, int], stride: int, padding: int) -> Tensor:
    """Adjoint of im2col: overlapping patches added back in a fixed (row, column) kernel order."""
    n, c, h, w = shape
    kh, kw = kernel
    ho, wo = (compute_output_size(h, kh, stride, padding), compute_output_size(w, kw, stride, padding))
    patches = cols.reshape(n, ho, wo, c, kh * kw).permute(0, 3, 4, 1, 2)  # (N, C, kh·kw, Ho, Wo)
    padded = torch.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype, device=cols.device)
    for index in range(kh * kw):
        i, j = divmod(index, kw)
        view = padded[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
        view += patches[:, :, index]
    return padded[:, :, padding : padding + h, padding : padding + w]
