"""The compiled fixed-order kernels give the reference's bits, on every ISA path this CPU runs.

`protocol.repro.reference` is the executable contract (pure torch, any device); the C++ kernels are
the fast CPU implementation. Hypothesis draws shapes and values — ordinary, signed zeros,
subnormals, a 2**±40 spread, and infinities and NaN — and every kernel must agree bit for bit
(NaN payloads excepted: the contract leaves them free and the optimizer updates canonicalise them).
The reference's own primitives are checked against exact rational arithmetic.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.repro import reference as R
from protocol.repro.backend import get_cpu_kernels, get_torch_isa

FLAVOURS = ("normal", "signed_zeros", "subnormal", "spread", "specials")
KERNELS = get_cpu_kernels()


def make(shape, seed: int, flavour: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 4 - 2
    pick = torch.rand(shape, generator=g)
    if flavour == "signed_zeros":
        x = torch.where(pick < 0.3, torch.zeros_like(x) * torch.sign(x), x)
    elif flavour == "subnormal":
        x = torch.where(pick < 0.3, x * 2.0**-130, x)
    elif flavour == "spread":
        x = x * torch.pow(2.0, (torch.rand(shape, generator=g) * 80 - 40).round())
    elif flavour == "specials":
        x = torch.where(pick < 0.05, torch.full_like(x, math.inf) * torch.sign(x), x)
        x = torch.where((pick > 0.05) & (pick < 0.08), torch.full_like(x, math.nan), x)
    return x


def assert_same_bits(fast, slow, what: str) -> None:
    if isinstance(fast, tuple):
        for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
            assert_same_bits(a, b, f"{what}[{i}]")
        return
    assert fast.shape == slow.shape, (what, fast.shape, slow.shape)
    nan_a, nan_b = fast.isnan(), slow.isnan()
    assert torch.equal(nan_a, nan_b), f"{what}: NaN positions differ"
    bits_a, bits_b = fast.view(torch.int32)[~nan_a], slow.view(torch.int32)[~nan_b]
    differ = (bits_a != bits_b).nonzero()
    assert differ.numel() == 0, (
        f"{what}: {differ.numel()} elements differ, first {fast[~nan_a][differ[0]].item()!r} vs {slow[~nan_b][differ[0]].item()!r}"
    )


def on_every_isa(case) -> None:
    """Run `case(kernels)` on every ISA table this CPU runs, against `case(reference)`."""
    expected = case(R)
    try:
        for isa in KERNELS.available_isas():
            KERNELS.select_isa(isa)
            assert_same_bits(case(KERNELS), expected, isa)
    finally:
        KERNELS.select_isa(get_torch_isa())


def test_this_cpu_exercises_more_than_one_kernel_path():
    assert "scalar" in KERNELS.available_isas()
    assert len(KERNELS.available_isas()) >= 2, "expected AVX2 (or better) on a CI machine"


shapes = st.tuples(st.integers(1, 40), st.integers(1, 150), st.integers(1, 40))
common = dict(seed=st.integers(0, 2**31), flavour=st.sampled_from(FLAVOURS))


@settings(max_examples=40)
@given(shape=shapes, with_bias=st.booleans(), transpose=st.booleans(), **common)
def test_matmul_matches_reference(shape, with_bias, transpose, seed, flavour):
    m, k, n = shape
    a, b, bias = (
        make((m, k), seed, flavour),
        make((k, n), seed + 1, flavour),
        make((n,), seed + 2, flavour),
    )
    if transpose:  # strided operands, as a linear layer's backward passes them
        a, b = a.t().contiguous().t(), b.t().contiguous().t()
    on_every_isa(lambda K: K.matmul(a, b, bias if with_bias else None))


@settings(max_examples=15)
@given(
    batch=st.tuples(st.integers(1, 3), st.integers(1, 4)),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    **common,
)
def test_batched_strided_matmul_and_softmax_match_reference(batch, size, seed, flavour):
    t, d = size
    q = make((batch[0], t, batch[1], d), seed, flavour).transpose(
        1, 2
    )  # (B, H, T, D) view, as from qkv
    k = make((batch[0], batch[1], t, d), seed + 1, flavour)
    on_every_isa(lambda K: K.matmul(q, k.transpose(-2, -1)))
    scores = make((*batch, t, t), seed + 2, flavour)
    on_every_isa(lambda K: K.softmax_(scores.clone(), 0.25, True))
    on_every_isa(lambda K: K.softmax_(scores.clone(), 1.5, False))
    on_every_isa(
        lambda K: K.softmax_backward(scores, make((*batch, t, t), seed + 3, flavour), 0.25)
    )
    out = torch.empty(batch[0], t, batch[1], d).transpose(1, 2)  # written through a strided view
    on_every_isa(lambda K: K.matmul(scores, q, None, out.clone()))


@settings(max_examples=30)
@given(rows=st.integers(0, 70), width=st.integers(1, 70), **common)
def test_sums_and_row_ops_match_reference(rows, width, seed, flavour):
    x, w, b = (
        make((rows, width), seed, flavour),
        make((width,), seed + 1, flavour),
        make((width,), seed + 2, flavour),
    )
    on_every_isa(lambda K: K.sum16_cols(x))
    if rows == 0:
        return
    on_every_isa(lambda K: K.sum16_rows(x))
    on_every_isa(lambda K: K.layer_norm_forward(x, w, b, 1e-5))
    normalized, inv_std = (
        make((rows, width), seed + 3, flavour),
        make((rows, 1), seed + 4, flavour).abs(),
    )
    on_every_isa(lambda K: K.layer_norm_backward(x, normalized, inv_std, w))
    index = torch.randint(0, 9, (rows,), generator=torch.Generator().manual_seed(seed))
    on_every_isa(lambda K: K.segment_sum(x, index, 9))
    targets = torch.randint(0, width, (rows,), generator=torch.Generator().manual_seed(seed + 5))
    on_every_isa(lambda K: K.cross_entropy(x * 8, targets))
    on_every_isa(lambda K: K.cross_entropy_backward(normalized.abs(), targets, torch.tensor(0.75)))


@settings(max_examples=30)
@given(n=st.integers(1, 300), **common)
def test_elementwise_kernels_and_optimizer_updates_match_reference(n, seed, flavour):
    x, y, z = (make((n,), seed + i, flavour) for i in range(3))
    on_every_isa(lambda K: K.exp_nonpositive(-(x * 60).abs()))
    on_every_isa(lambda K: K.log(x.abs() * 1e3 + 1e-30))
    on_every_isa(lambda K: K.tanh(x * 8))
    on_every_isa(lambda K: K.gelu_forward(x * 4))
    on_every_isa(lambda K: K.gelu_backward(y, x * 4, R.tanh(z)))
    scalars = R.adamw_scalars(seed % 50 + 1, 3e-3, 0.9, 0.999, 1e-8, 0.01)
    on_every_isa(lambda K: K.adamw_update(x, y, z, (x * y).abs(), *scalars))
    on_every_isa(lambda K: K.sgd_update(x, y, z, 0.1, 0.9, 1e-4 if seed % 2 else 0.0))


@settings(max_examples=15)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    **common,
)
def test_convolution_gathers_match_reference(n, c, h, w, kernel, stride, padding, seed, flavour):
    if h + 2 * padding < kernel or w + 2 * padding < kernel:
        return
    x = make((n, h, w, c), seed, flavour)
    on_every_isa(lambda K: K.im2col(x, kernel, kernel, stride, padding))
    out_channels = seed % 70 + 1  # past one 64-term chain now and then
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    grad_rows, w_rows = (
        make((n * ho * wo, out_channels), seed + 4, flavour),
        make((out_channels, kernel * kernel * c), seed + 5, flavour),
    )
    on_every_isa(
        lambda K: K.conv2d_input_grad(
            grad_rows, w_rows, [n, h, w, c], kernel, kernel, stride, padding
        )
    )
    channels_last = make((n, h, w, c), seed + 2, flavour).permute(
        0, 3, 1, 2
    )  # a dense, strided view
    on_every_isa(lambda K: K.relu(channels_last))
    on_every_isa(
        lambda K: K.relu_backward(make((n, c, h, w), seed + 3, flavour), K.relu(channels_last))
    )


# --- the reference's primitives against exact arithmetic ----------------------------------------


def round_to_float32(q: Fraction) -> float:
    """The float32 nearest to q (ties to even), by integer arithmetic; inf beyond the range."""
    if q == 0:
        return 0.0
    sign, q = (-1.0 if q < 0 else 1.0), abs(q)
    exponent = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** exponent > q:
        exponent -= 1
    exponent = max(exponent, -126)  # subnormals share the smallest normal exponent's unit
    unit = Fraction(2) ** (exponent - 23)
    whole, rest = divmod(q / unit, 1)
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    value = float(whole * unit)
    return sign * (math.inf if value > 3.4028234663852886e38 else value)


# a·b + c whose float64 sum lands exactly on a float32 midpoint while the tiny c pushes it off:
# double rounding there gives the wrong answer, the exact rule must not.
HARD_FMAS = [
    (1 + 2.0**-12, 1 + 2.0**-12, 2.0**-80),
    (1 + 2.0**-12, 1 + 2.0**-12, -(2.0**-80)),
    (1 + 2.0**-12, -(1 + 2.0**-12), 2.0**-90),
    (2.0**-70, 2.0**-70, 2.0**-149),
    (3.0, 2.0**126, -(2.0**127)),
]


@settings(max_examples=200)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=3, max_size=3))
def test_fma32_is_the_correctly_rounded_fused_multiply_add(triple):
    cases = [tuple(triple), *HARD_FMAS]
    a, b, c = (torch.tensor([t[i] for t in cases], dtype=torch.float32) for i in range(3))
    expected = [
        round_to_float32(Fraction(R.f32(x)) * Fraction(R.f32(y)) + Fraction(R.f32(z)))
        for x, y, z in cases
    ]
    assert R.fma32(a, b, c).tolist() == expected
    # and the compiled kernels' fma (a one-term dot product starting from the bias) agrees
    for i in range(len(cases)):
        on_every_isa(
            lambda K, i=i: K.matmul(a[i].reshape(1, 1), b[i].reshape(1, 1), c[i].reshape(1))
        )


def test_sqrt32_is_correctly_rounded_where_torch_sqrt_is_not():
    x = torch.cat(
        [
            torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 10,
            torch.tensor([0.0, -0.0, math.inf, 1e-45, 3.4e38, 2.0**-130]),
        ]
    )
    exact = torch.from_numpy(np.sqrt(x.numpy()))  # IEEE sqrt: correctly rounded
    assert torch.equal(R.sqrt32(x), exact)
    assert not torch.equal(torch.sqrt(x), exact), "torch.sqrt became exact: the workaround can go"


# --- ONNX layers: tanh / sigmoid, softmax, average pooling, batch normalisation -----------------

EDGES = torch.tensor(
    [0.0, -0.0, 1e-45, -1e-45, 2.0**-130, 1e-8, -1e-8, 0.5, -0.5, 9.0, -9.0, 17.0, -17.0]
    + [43.5, -43.5, 86.9, -86.9, 87.0, -87.0, 87.1, -87.1, 104.0, -104.0, 3.4e38, -3.4e38]
    + [math.inf, -math.inf, math.nan]
)


def test_tanh_and_sigmoid_edge_values():
    for x in (EDGES, EDGES * 0.5, EDGES * 0.125):
        on_every_isa(lambda K, x=x: K.tanh(x))
        on_every_isa(lambda K, x=x: K.sigmoid(x))
        on_every_isa(lambda K, x=x: K.tanh_backward(torch.ones_like(x), R.tanh(x)))
        on_every_isa(lambda K, x=x: K.sigmoid_backward(-torch.ones_like(x), R.sigmoid(x)))
    s = R.sigmoid(EDGES)
    assert s[math.inf == EDGES].item() == 1.0 and s[-math.inf == EDGES].item() == 0.0
    assert s[EDGES.view(torch.int32) == 0].item() == 0.5 and s.isnan().sum().item() == 1
    assert (s[EDGES.isfinite()] == torch.sigmoid(EDGES[EDGES.isfinite()])).float().mean() > 0.5
    assert torch.equal(R.tanh(-EDGES[:2]).view(torch.int32), (-EDGES[:2]).view(torch.int32))


@settings(max_examples=30)
@given(n=st.integers(1, 300), **common)
def test_tanh_sigmoid_kernels_match_reference(n, seed, flavour):
    x, g = make((n,), seed, flavour), make((n,), seed + 1, flavour)
    for scale in (1.0, 60.0):  # past ±87, where exp flushes to +0
        on_every_isa(lambda K, s=scale: K.sigmoid(x * s))
        on_every_isa(lambda K, s=scale: K.tanh(x * s))
    on_every_isa(lambda K: K.tanh_backward(g, R.tanh(x * 4)))
    on_every_isa(lambda K: K.sigmoid_backward(g, R.sigmoid(x * 4)))
    planes = make((2, 3, n % 7 + 1, 5), seed + 2, flavour)
    channels_last = planes.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    on_every_isa(lambda K: K.sigmoid(channels_last))  # a dense, strided view keeps its layout
    on_every_isa(lambda K: K.sigmoid_backward(planes, R.sigmoid(channels_last)))


@settings(max_examples=20)
@given(rows=st.integers(1, 40), width=st.integers(1, 90), **common)
def test_plain_softmax_matches_reference(rows, width, seed, flavour):
    """The ONNX Softmax is the attention softmax with scale 1 (x·1 = x exactly), unmasked."""
    x, g = make((rows, width), seed, flavour) * 8, make((rows, width), seed + 1, flavour)
    on_every_isa(lambda K: K.softmax_(x.clone(), 1.0, False))
    probs = R.softmax_(x.clone(), 1.0, False)
    on_every_isa(lambda K: K.softmax_backward(g, probs, 1.0))


@settings(max_examples=25)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 40),
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    gap=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    **common,
)
def test_average_pools_match_reference(n, c, h, w, kernel, gap, seed, flavour):
    kh, kw = min(kernel[0], h), min(kernel[1], w)
    sh, sw = kh + gap[0], kw + gap[1]  # windows apart (stride >= kernel)
    x = make((n, h, w, c), seed, flavour)
    on_every_isa(lambda K: K.avg_pool2d(x, kh, kw, sh, sw))
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    g = make((n, ho, wo, c), seed + 1, flavour)
    on_every_isa(lambda K: K.avg_pool2d_backward(g, h, w, kh, kw, sh, sw))
    # the global pool: one window of up to 169 positions (past the 16 lanes)
    on_every_isa(lambda K: K.avg_pool2d(x, h, w, h, w))
    on_every_isa(lambda K: K.avg_pool2d_backward(g[:, :1, :1], h, w, h, w, h, w))


def test_average_pool_is_a_correctly_rounded_mean_and_refuses_overlap():
    x = torch.rand(2, 6, 6, 5, generator=torch.Generator().manual_seed(3))
    pooled = R.avg_pool2d(x, 6, 6, 6, 6)
    exact = x.double().mean(dim=(1, 2), keepdim=True)
    assert ((pooled.double() - exact).abs() / exact).max() < 1e-6
    # a sum of 36 floats ÷ 36: the division is IEEE (float64's then rounded equals it here)
    total = R._sum16_last(x.reshape(2, 36, 5).transpose(1, 2))
    assert torch.equal(pooled.reshape(2, 5), (total.double() / 36).float())
    for K in (R, KERNELS):
        with pytest.raises(ValueError, match="stride >= kernel"):
            K.avg_pool2d(x, 3, 3, 2, 2)


@settings(max_examples=30)
@given(rows=st.integers(1, 300), channels=st.integers(1, 40), **common)
def test_batch_norm_matches_reference(rows, channels, seed, flavour):
    x, w, b = (
        make((rows, channels), seed, flavour),
        make((channels,), seed + 1, flavour),
        make((channels,), seed + 2, flavour),
    )
    on_every_isa(lambda K: K.batch_norm_forward(x, w, b, 1e-5))
    on_every_isa(lambda K: K.batch_norm_forward(x * 1e3 + 7, w, b, 1e-3))
    g, normalized = (
        make((rows, channels), seed + 3, flavour),
        make((rows, channels), seed + 4, flavour),
    )
    inv_std = make((channels,), seed + 5, flavour).abs()
    on_every_isa(lambda K: K.batch_norm_backward(g, normalized, inv_std, w))


def test_batch_norm_reference_is_batch_norm():
    """Against torch's own (float64): output, batch statistics, running update and gradients."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(300, 6, generator=gen) * 3 - 1
    w, b = torch.rand(6, generator=gen) + 0.5, torch.rand(6, generator=gen)
    out, normalized, mean, inv_std, var = R.batch_norm_forward(x, w, b, 1e-5)
    wide = x.double()
    assert torch.allclose(mean.double(), wide.mean(0), rtol=1e-6, atol=1e-7)
    assert torch.allclose(var.double(), wide.var(0, unbiased=True), rtol=1e-5)
    expected = torch.nn.functional.batch_norm(
        wide, None, None, w.double(), b.double(), True, 0.1, 1e-5
    )
    assert (out.double() - expected).abs().max() < 1e-5
    g = torch.rand(300, 6, generator=gen) - 0.5
    grad_x, grad_w, grad_b = R.batch_norm_backward(g, normalized, inv_std, w)
    leaves = [t.clone().requires_grad_(True) for t in (wide, w.double(), b.double())]
    ref = torch.nn.functional.batch_norm(
        leaves[0], None, None, leaves[1], leaves[2], True, 0.1, 1e-5
    )
    expected_grads = torch.autograd.grad(ref, leaves, g.double())
    for got, want in zip((grad_x, grad_w, grad_b), expected_grads, strict=True):
        assert (got.double() - want).abs().max() / want.abs().max() < 1e-5
    running = R.running_stat(torch.ones(6), mean, 0.1)
    assert torch.allclose(running, 0.9 + 0.1 * mean)
