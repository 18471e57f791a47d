"""Backend-neutral fixed-order kernels: the only arithmetic the repro profile does.

Every function here is built from operations whose result is fixed by IEEE 754 whatever the thread
count, vector width or device: elementwise add / multiply / divide / sqrt (each correctly rounded),
truncation, comparisons and selects, bit-level reinterpretation, `amax`/`amin` (a max is exact,
so its order cannot matter), and fp64 matrix products and sums of values rounded onto a common
grid with headroom (exact, so their order cannot matter either — see `exact_matmul`,
`exact_column_sum`, `exact_segment_sum`). Nothing takes `sum`, `mean`, `softmax`, `exp`, `log`,
`tanh` or a float32 BLAS on raw values, whose results depend on threads, ISA or the math
library's CPU dispatch. Intermediates the kernels own are updated in place (`mul_`, `add_`): the
same correctly rounded operations, without allocating and streaming a new tensor per step.

The kernels take and return `torch.Tensor`s and never name a device, so the same code runs on a
CUDA tensor; a CUDA backend only has to keep the same rules (no fused multiply-add across ops,
IEEE division and sqrt, which are the CUDA defaults for separate elementwise kernels).
"""

import math

import torch
from torch import Tensor

FP64_MANTISSA_BITS = 53
# float64 jobs: slices (left operand, right operand) and bits per slice (None: from K). float32
# jobs take `_exact_matmul_float32` (one slice per operand, see `_float32_widths`).
SLICES = {torch.float64: (3, 3, None)}
# Above this many terms per dot product, K is cut into blocks whose exact products are added in
# fixed order in fp64, so slices stay wide (float32: ≥ 22 bits per operand; see docs/repro.md
# for the error this costs against a float64 reference and against torch).
MAX_EXACT_K = 512
# Row/column scale floor: keeps every slice unit above fp64's subnormal range, so slice products
# never underflow (only fp64 inputs below 2**-400 are affected; they round to zero).
MIN_EXPONENT = -400
ROUNDING_MAGIC = 1.5 * 2.0**52  # (x + M) - M rounds x to an integer, for |x| < 2**51


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
    if width > 1:  # first level into a fresh tensor, the others in place in its first half
        width //= 2
        x = x.narrow(dim, 0, width) + x.narrow(dim, width, width)
    while width > 1:
        width //= 2
        x = x.narrow(dim, 0, width).add_(x.narrow(dim, width, width))
    return x if keepdim else x.squeeze(dim)


def fixed_sum_rows(x: Tensor) -> Tensor:
    """Sum over every leading dimension: (..., D) → (D,), e.g. a bias gradient.

    float32: an exact sum (`exact_column_sum`); float64: the fixed pairwise tree.
    """
    rows = x.reshape(-1, x.shape[-1])
    return exact_column_sum(rows) if rows.dtype == torch.float32 else fixed_sum(rows, 0)


def exact_total(x: Tensor) -> Tensor:
    """Σ of all elements as a 0-d tensor: exact then rounded once (float32), else the fixed tree."""
    if x.dtype == torch.float32:
        return exact_column_sum(x.reshape(-1, 1)).reshape(())
    return fixed_sum(x.reshape(-1), 0)


def _exact_sum_bits(k: int) -> int:
    """Bits per value (relative to its column maximum) so k of them add exactly in fp64."""
    return min(51, FP64_MANTISSA_BITS - (math.ceil(math.log2(k)) if k > 1 else 0))


def exact_column_sum(x: Tensor) -> Tensor:
    """Σ over rows of float32 (K, D): each column rounded to whole units 2**(e − b), 2**e bounding
    the column, b = `_exact_sum_bits(K)` (≥ 33 bits for K ≤ 2**20), so every partial sum is an
    integer below 2**53 units: torch's fp64 `sum`, in whatever order its threads and vectors add,
    gives the exact sum of the rounded values; one rounding to float32 at the end."""
    if x.shape[0] == 0:
        return torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    rounded = _round_to_slice(x, 0, _exact_sum_bits(x.shape[0]))
    return rounded.sum(0).to(torch.float32)


def exact_segment_sum(values: Tensor, index: Tensor, segments: int) -> Tensor:
    """out[s] = Σ values[i] over i with index[i] = s, for float32 (K, D) values: (segments, D).

    Each column is rounded to a whole number of units 2**(e − b), 2**e bounding the column and
    b = min(51, 53 − ⌈log2 K⌉) (so ≥ 33 bits relative to the column maximum for K ≤ 2**20):
    every partial sum is then an integer below 2**53 units, exact in fp64, so `index_add_` may
    add in any order, on any number of threads (rounding makes every −0 a +0, so the sign of a
    zero cannot depend on the order either); one rounding to float32 at the end.
    """
    out = torch.zeros((segments, values.shape[1]), dtype=torch.float64, device=values.device)
    if values.shape[0] > 0:
        out.index_add_(0, index, _round_to_slice(values, 0, _exact_sum_bits(values.shape[0])))
    return out.to(torch.float32)


# --- exact matrix product ----------------------------------------------------------------------


def _power_of_two_exponent(m: Tensor) -> Tensor:
    """e with m < 2**e for finite m ≥ 0 in fp64, read from the bits (frexp without a libm)."""
    biased = (m.view(torch.int64) >> 52) & 0x7FF
    return (biased - 1022).clamp(MIN_EXPONENT, 1023)


def _power_of_two(e: Tensor) -> Tensor:
    """2**e as fp64 for integer e in [-1022, 1023], built from the bits: exact by construction."""
    return ((e + 1023) << 52).view(torch.float64)


def _slices(x: Tensor, dim: int, count: int, beta: int) -> Tensor:
    """Cut fp64 x into `count` slices stacked on a new leading dim: x ≈ Σ slices.

    Slice i is x's remainder rounded to a multiple of 2**(e − beta·(i+1)), where 2**e bounds the
    vector along `dim`; so each slice is an integer of at most beta bits times one power of two
    per vector. Rounding by adding and subtracting a scaled magic constant, and taking the
    remainder, are both exact in fp64.
    """
    exponent = _power_of_two_exponent(x.abs().amax(dim=dim, keepdim=True))
    out = torch.empty((count, *x.shape), dtype=torch.float64, device=x.device)
    rest = x
    for i in range(count):
        magic = _power_of_two(exponent - beta * (i + 1)) * ROUNDING_MAGIC
        torch.sub(rest + magic, magic, out=out[i])
        if i + 1 < count:
            rest = rest - out[i]
    return out


def _slice_widths(dtype: torch.dtype, k: int) -> tuple[int, int, int, int]:
    """(left slices, left bits, right slices, right bits) so that any k products of one left and
    one right slice, and all their partial sums, are integers below 2**53 in a shared unit."""
    left_count, right_count, right_bits = SLICES[dtype]
    k_bits = math.ceil(math.log2(k)) if k > 1 else 0
    if right_bits is None:
        bits = (FP64_MANTISSA_BITS - k_bits) // 2
        return left_count, bits, right_count, bits
    return left_count, FP64_MANTISSA_BITS - right_bits - k_bits, right_count, right_bits


def _exact_block(a: Tensor, b: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """All slice products of one K block, by level l = i + j, as exact fp64 matrices.

    One fp64 matmul: left slices stacked as a leading batch, right slices side by side along N.
    Every product term is an integer times a per-(row, column) power of two, and every partial
    sum stays below 2**53 units, so the BLAS's order of summation — threads, vector width, FMA or
    not — cannot change a single bit.
    """
    left_count, left_bits, right_count, right_bits = _slice_widths(dtype, a.shape[-1])
    left = _slices(a, -1, left_count, left_bits)  # (sA, ..., M, K)
    right = _slices(b, -2, right_count, right_bits)  # (sB, ..., K, N)
    n = b.shape[-1]
    products = torch.matmul(left, torch.cat(list(right), dim=-1)) if right_count > 1 else torch.matmul(left, right[0])
    levels: list[Tensor] = []
    for i in range(left_count):
        for j in range(right_count):
            if i + j < max(left_count, right_count):  # the rest is below the result's rounding
                term = products[i][..., j * n : (j + 1) * n]
                if i + j < len(levels):
                    levels[i + j] = levels[i + j] + term
                else:
                    levels.append(term)
    return levels


# float32: one slice per operand, `bits` wide relative to its row (left) or column (right)
# maximum, with bits_left + bits_right + ⌈log2 K⌉ ≤ 53; never more than float32's own 24.
FLOAT32_BITS = 24
SMALLEST_NORMAL_BITS = 0x00800000  # float32 2**-126


def _float32_widths(k: int) -> tuple[int, int]:
    """(left bits, right bits) for one fp64 GEMM over k terms to be exact."""
    total = FP64_MANTISSA_BITS - (math.ceil(math.log2(k)) if k > 1 else 0)
    left = min(FLOAT32_BITS, (total + 1) // 2)
    return left, min(FLOAT32_BITS, total - left)


def _round_to_slice(x: Tensor, dim: int, bits: int) -> Tensor:
    """float32 x as fp64, each element rounded to a multiple of 2**(e − bits), where 2**e bounds
    x's vector along `dim` (e read from the float32 exponent bits of the vector's max |x|).

    (x + M) − M with M = 1.5·2**52 units rounds x to a whole number of units, exactly, in fp64
    (|x| < 2**bits units ≤ 2**51 units). The floor at float32's smallest normal keeps a vector of
    zeros or subnormals on a unit of at most 2**-149, where float32 values are already whole.
    A vector holding ±inf or NaN becomes all NaN (the same on every machine): a diverged step.
    """
    if x.shape[dim] >= 256:  # long vectors: two reductions beat a full-size abs (measured)
        bound = torch.maximum(x.amax(dim=dim, keepdim=True), x.amin(dim=dim, keepdim=True).neg_())
    else:
        bound = x.abs().amax(dim=dim, keepdim=True)
    power = (bound.view(torch.int32) & 0x7F800000).clamp_min_(SMALLEST_NORMAL_BITS)  # 2**⌊log2 max⌋
    magic = power.view(torch.float32).to(torch.float64).mul_(1.5 * 2.0 ** (53 - bits))
    return x.to(torch.float64).add_(magic).sub_(magic)


def _exact_matmul_float32(a: Tensor, b: Tensor) -> Tensor:
    """One fp64 GEMM per K block of ≤ MAX_EXACT_K terms (see `exact_matmul`)."""
    k = a.shape[-1]
    combined: Tensor | None = None
    for start in range(0, k, MAX_EXACT_K):  # K blocks in a fixed order, summed elementwise
        stop = min(k, start + MAX_EXACT_K)
        left_bits, right_bits = _float32_widths(stop - start)
        a_block = a if stop - start == k else a[..., start:stop]
        b_block = b if stop - start == k else b[..., start:stop, :]
        part = torch.matmul(_round_to_slice(a_block, -1, left_bits), _round_to_slice(b_block, -2, right_bits))
        combined = part if combined is None else combined.add_(part)
    return combined.to(torch.float32).add_(0.0)  # + 0.0 makes an exact -0 into +0, whatever the BLAS did


def exact_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for (..., M, K) @ (..., K, N), bit-identical on any threads, ISA or device.

    float32: each row of a and column of b rounded to one slice of `_float32_widths(K)` bits
    relative to its maximum (24/24 for K ≤ 32 down to 22/22 for K blocks of 512), one fp64 GEMM
    per K block — exact, so its summation order (threads, vector width, FMA) cannot matter — the
    blocks added in fixed order, one rounding to float32. float64: Ozaki-style splitting into
    three slices per operand (see `_slices`, `_exact_block`), the exact slice products combined
    by fixed elementwise steps, smallest first. Elements far below their row/column maximum lose
    low bits — see docs/repro.md for the measured error against torch and a float64 reference.
    """
    dtype = a.dtype
    k = a.shape[-1]
    if dtype == torch.float32 and k > 0:
        return _exact_matmul_float32(a, b)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if k == 0:
        return torch.matmul(a64, b64).to(dtype)  # all zeros
    levels: list[Tensor] | None = None
    for start in range(0, k, MAX_EXACT_K):  # K blocks in a fixed order, summed elementwise
        stop = min(k, start + MAX_EXACT_K)
        part = _exact_block(a64[..., start:stop], b64[..., start:stop, :], dtype)
        levels = part if levels is None else [x + y for x, y in zip(levels, part, strict=True)]
    combined = levels[-1]
    for level in reversed(levels[:-1]):
        combined = combined + level
    return (combined + 0.0).to(dtype)  # + 0.0 makes an exact -0 into +0, whatever the BLAS did


# --- transcendental functions ------------------------------------------------------------------

LN2 = math.log(2.0)
# ln 2 split so n·high is exact in the dtype (Cody–Waite range reduction): a Python float
# meets a float32 tensor as float32, so float32 needs a high part with few bits (Cephes's split).
LN2_SPLIT = {torch.float32: (0.693359375, -2.12194440e-4),
             torch.float64: (6.93147180369123816490e-01, 1.90821492927058770002e-10)}
# Taylor degree so the remainder on |r| ≤ ln2/2 is below half an ulp of the dtype.
EXP_DEGREE = {torch.float32: 8, torch.float64: 14}
# exp(x) below these is zero (or subnormal) in the dtype; above, infinity.
EXP_LIMITS = {torch.float32: (-87.0, 88.5), torch.float64: (-707.0, 709.5)}
# (mantissa bits, exponent bias, integer view) to build 2**e from bits in the dtype itself.
FLOAT_LAYOUT = {torch.float32: (23, 127, torch.int32), torch.float64: (52, 1023, torch.int64)}


def _horner(r: Tensor, coefficients: list[float]) -> Tensor:
    result = r * coefficients[-1] + coefficients[-2]
    for c in reversed(coefficients[:-2]):
        result.mul_(r).add_(c)  # two separate correctly rounded ops, never an FMA
    return result


def _power_of_two_in(e: Tensor, dtype: torch.dtype) -> Tensor:
    """2**e in `dtype` for integer-valued float e within its normal range, from the bits."""
    mantissa_bits, bias, int_type = FLOAT_LAYOUT[dtype]
    return ((e.to(int_type) + bias) << mantissa_bits).view(dtype)


def _exp_reduced(clamped: Tensor) -> tuple[Tensor, Tensor]:
    """(n, P(r)) with exp(x) = 2**n · P(r), r = x − n·ln2 (Cody–Waite, |r| ≤ ln2/2).

    Consumes `clamped` (a fresh tensor): r is computed in its storage.
    """
    dtype = clamped.dtype
    n = (clamped * (1.0 / LN2)).round_()
    ln2_high, ln2_low = LN2_SPLIT[dtype]
    step = n * ln2_high
    r = clamped.sub_(step)
    r.sub_(torch.mul(n, ln2_low, out=step))
    coefficients = [1.0 / math.factorial(i) for i in range(EXP_DEGREE[dtype])]
    return n, _horner(r, coefficients)


def exp(x: Tensor) -> Tensor:
    """e**x from +, ×, round and exponent bits: exp(x) = 2**n · P(x − n·ln2).

    Inputs below the dtype's normal range give +0 (softmax of a masked -inf is exactly 0);
    above it, +inf. Error ≈ 1–2 ulp (checked against torch.exp in tests/repro).
    """
    low, high = EXP_LIMITS[x.dtype]
    n, result = _exp_reduced(x.clamp(low, high))
    # 2**n applied as two factors so neither leaves the dtype's normal exponent range.
    half = (n * 0.5).trunc_()
    result *= _power_of_two_in(half, x.dtype)
    result *= _power_of_two_in(n.sub_(half), x.dtype)
    result.masked_fill_(x < low, 0.0)
    result.masked_fill_(x > high, math.inf)
    return torch.where(x.isnan(), x, result)


def exp_nonpositive(x: Tensor, consume: bool = False, underflow_to_zero: bool = True) -> Tensor:
    """`exp` for x ≤ 0 (or NaN), as softmax, cross-entropy and tanh use it: the same bits as
    `exp` there, with 2**n (n ≥ −126) as a single factor. `consume`: x may be overwritten.
    `underflow_to_zero=False` leaves exp(max(x, −87)) ≈ 1.6e-38 below −87 instead of +0, for
    callers (tanh) whose result does not change (1 ± 1.6e-38 rounds to 1)."""
    low = EXP_LIMITS[x.dtype][0]
    underflow = x < low if underflow_to_zero else None
    n, result = _exp_reduced(x.clamp_min_(low) if consume else x.clamp_min(low))
    n.masked_fill_(n.isnan(), 0.0)  # NaN in, NaN out (through P(r)), without an undefined cast
    result *= _power_of_two_in(n, x.dtype)
    return result if underflow is None else result.masked_fill_(underflow, 0.0)


# atanh series terms: s**(2i+1)/(2i+1) for |s| ≤ 0.172 is below 1e-11 relative from i = 6 (far
# under float32's half ulp, 6e-8) and below 1e-20 from i = 12 (float64's is 1.1e-16).
LOG_TERMS = {torch.float32: 6, torch.float64: 12}


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
    series = _horner(s2, [1.0 / (2 * i + 1) for i in range(LOG_TERMS[x.dtype])])
    result = (s * 2.0) * series + e.to(torch.float64) * LN2
    return result.to(x.dtype)


def tanh(x: Tensor) -> Tensor:
    """tanh(x) = sign(x)·(1 − e)/(1 + e), e = exp(−2|x|); absolute error about one ulp of 1.

    The sign is copied from x, so tanh(−0) = −0 as in IEEE libms.
    """
    e = exp_nonpositive(x.abs().mul_(-2.0), consume=True, underflow_to_zero=False)
    magnitude = torch.sub(1.0, e)
    magnitude /= e.add_(1.0)
    return magnitude.copysign_(x)


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
