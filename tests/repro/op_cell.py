"""One matrix cell of the op-level property test, run in its own interpreter.

The parent starts this with a thread count and ATEN_CPU_CAPABILITY in the environment. Hypothesis
(derandomized, so every cell sees the same examples) draws shapes and value flavours; every repro
op runs forward and backward on them, and the SHA-256 of each output's bytes is printed as JSON,
with the error against the native op for inputs in the ordinary range.
"""

import hashlib
import json
import os
import sys

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.ops import NATIVE_OPS
from protocol.repro.backend import get_cpu_kernels
from protocol.repro.ops import REPRO_OPS

FLAVOURS = ("normal", "signed_zeros", "subnormal", "spread")


def make_values(
    shape: tuple[int, ...], seed: int, flavour: str, dtype: torch.dtype
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * 2.0
    pick = torch.rand(shape, generator=generator, dtype=dtype)
    if flavour == "signed_zeros":
        x = torch.where(pick < 0.3, torch.zeros_like(x) * torch.sign(x), x)  # ±0 by sign of x
    elif flavour == "subnormal":
        tiny = torch.finfo(dtype).tiny
        x = torch.where(pick < 0.3, x * (tiny / 4), x)
    elif flavour == "spread":
        exponent = (torch.rand(shape, generator=generator, dtype=dtype) * 80 - 40).round()
        x = x * torch.pow(2.0, exponent)
    return x


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def normalized_error(repro: torch.Tensor, native: torch.Tensor, floor: float) -> float:
    """|repro − native| / max(|native|, floor): a loss near 0 is a difference of two values of
    order log(classes), so its error is measured in nats (floor 1), not relative to itself."""
    scale = max(native.detach().abs().max().item(), floor)
    return (repro.detach() - native.detach()).abs().max().item() / scale


def run_op(name, fn, inputs, upstream_seed, record, errors, compare, floor=1e-30):
    """Forward and gradients (against a seeded upstream gradient) for repro and native. `fn` may
    return a tuple: the first output is differentiated, the others (batch norm's running
    statistics) are hashed and compared too."""
    outputs = {}
    for ops in (REPRO_OPS, NATIVE_OPS):
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        result = fn(ops, *leaves)
        out, *extra = result if isinstance(result, tuple) else (result,)
        upstream = make_values(tuple(out.shape), upstream_seed, "normal", out.dtype)
        wanted = [t for t in leaves if t.requires_grad]
        grads = torch.autograd.grad(out, wanted, upstream, allow_unused=True)
        grads = [
            g if g is not None else torch.zeros_like(t) for g, t in zip(grads, wanted, strict=True)
        ]
        outputs[ops.name] = (out, *extra, *grads)
    record.append(f"{name}:{digest(*outputs['repro'])}")
    if compare:
        error = max(
            normalized_error(r, n, floor)
            for r, n in zip(outputs["repro"], outputs["native"], strict=True)
        )
        errors[name] = max(errors.get(name, 0.0), error)


def check_case(dtype, m, k, n, seed, flavour, record, errors):
    v = lambda shape, s=0: make_values(shape, seed + s, flavour, dtype)  # noqa: E731
    compare = flavour == "normal"
    run_op(
        "linear",
        lambda o, x, w, b: o.linear(x, w, b),
        [v((m, k)), v((n, k), 1), v((n,), 2)],
        seed + 3,
        record,
        errors,
        compare,
    )
    run_op(
        "conv2d",
        lambda o, x, w, b: o.conv2d(x, w, b, 2, 1),
        [v((2, 3, m % 7 + 3, k % 5 + 3)), v((n % 4 + 1, 3, 3, 3), 1), v((n % 4 + 1,), 2)],
        seed + 4,
        record,
        errors,
        compare,
    )
    indices = torch.randint(0, n, (m, 3), generator=torch.Generator().manual_seed(seed))
    run_op(
        "embedding",
        lambda o, w: o.embedding(indices, w),
        [v((n, k))],
        seed + 5,
        record,
        errors,
        compare,
    )
    # Below 8 features a row's variance can be ~0 and the layer norm gradient ill-conditioned
    # (native's own rounding dominates), so its error is compared from 8 features up.
    run_op(
        "layer_norm",
        lambda o, x, w, b: o.layer_norm(x, w, b, 1e-5),
        [v((m, k)), v((k,), 1), v((k,), 2)],
        seed + 6,
        record,
        errors,
        compare and k >= 8,
    )
    run_op("relu", lambda o, x: o.relu(x), [v((m, k))], seed + 7, record, errors, compare)
    run_op("gelu", lambda o, x: o.gelu(x), [v((m, k)) * 4], seed + 8, record, errors, compare)
    shape = (2, 2, m % 9 + 1, k % 8 + 1)
    run_op(
        "causal_attention",
        lambda o, q, kk, vv: o.causal_attention(q, kk, vv),
        [v(shape), v(shape, 1), v(shape, 2)],
        seed + 9,
        record,
        errors,
        compare,
    )
    targets = torch.randint(0, n, (m,), generator=torch.Generator().manual_seed(seed + 10))
    run_op(
        "cross_entropy",
        lambda o, x: o.cross_entropy(x, targets),
        [v((m, n)) * 8],
        seed + 11,
        record,
        errors,
        compare,
        1.0,
    )
    run_op(
        "mse_loss",
        lambda o, x: o.mse_loss(x, v((m, n), 12)),
        [v((m, n))],
        seed + 13,
        record,
        errors,
        compare,
        1.0,
    )
    check_onnx_layers(v, m, k, n, seed, record, errors, compare)
    x = v((m, k))
    kernels = get_cpu_kernels()
    nonpositive = -(x * 30).abs()
    record.append(
        f"kernels:{digest(kernels.exp_nonpositive(nonpositive), kernels.log(x.abs() + 1e-30), kernels.tanh(x * 5), kernels.sum16_cols(x), kernels.sum16_rows(x))}"
    )
    if compare:
        exact = torch.exp(nonpositive.double())
        relative = (
            ((kernels.exp_nonpositive(nonpositive).double() - exact).abs() / exact).max().item()
        )
        errors["exp"] = max(errors.get("exp", 0.0), relative)


def batch_norm(ops, x, w, b, seed=0):
    """Training-mode batch norm with running statistics that are not trivial."""
    channels = x.shape[1]
    running_mean = make_values((channels,), seed, "normal", x.dtype)
    running_var = make_values((channels,), seed + 1, "normal", x.dtype).abs() + 0.5
    return ops.batch_norm(x, w, b, running_mean, running_var, 0.1, 1e-5)


def check_onnx_layers(v, m, k, n, seed, record, errors, compare):
    """Tanh, sigmoid, softmax, batch norm (1-D and 2-D), average pools: the ONNX layers."""
    run_op("tanh", lambda o, x: o.tanh(x), [v((m, k)) * 3], seed + 20, record, errors, compare)
    run_op(
        "sigmoid", lambda o, x: o.sigmoid(x), [v((m, k)) * 8], seed + 21, record, errors, compare
    )
    run_op(
        "softmax",
        lambda o, x: o.softmax(x, -1),
        [v((m, n)) * 8],
        seed + 22,
        record,
        errors,
        compare,
    )
    run_op(
        "softmax", lambda o, x: o.softmax(x, 0), [v((m, n)) * 8], seed + 23, record, errors, compare
    )
    # Below 8 rows per channel a batch's variance can be ~0 and the input gradient ill-conditioned
    # (as for layer norm), so the error is compared from 8 rows up.
    run_op(
        "batch_norm",
        lambda o, x, w, b: batch_norm(o, x, w, b, seed),
        [v((m + 1, n)), v((n,), 1) + 2, v((n,), 2)],
        seed + 24,
        record,
        errors,
        compare and m >= 8,
    )
    run_op(
        "batch_norm",
        lambda o, x, w, b: batch_norm(o, x, w, b, seed),
        [v((2, n % 5 + 1, m % 7 + 2, k % 5 + 2)), v((n % 5 + 1,), 1) + 2, v((n % 5 + 1,), 2)],
        seed + 25,
        record,
        errors,
        compare,
    )
    size = (m % 9 + 2, k % 7 + 2)
    kernel = (min(1 + seed % 3, size[0]), min(1 + seed // 3 % 3, size[1]))
    stride = (kernel[0] + seed // 9 % 2, kernel[1])
    run_op(
        "avg_pool2d",
        lambda o, x: o.avg_pool2d(x, kernel, stride),
        [v((2, n % 4 + 1, *size))],
        seed + 26,
        record,
        errors,
        compare,
    )
    run_op(
        "global_avg_pool",
        lambda o, x: o.global_avg_pool(x),
        [v((2, n, m % 9 + 1, k % 8 + 1))],
        seed + 27,
        record,
        errors,
        compare,
    )


def check_large(record, errors):
    """Fixed float32 cases with long reductions, beyond what the hypothesis shapes reach: exact
    matmuls over several K blocks (forward K = 600, weight gradients over 1100 and 2048 rows),
    column sums and segment sums over 1100 rows, a softmax over 600 classes, batch-norm statistics
    over 9216 rows per channel, a global average pool over 1024 positions."""
    for flavour in ("normal", "spread"):
        v = lambda shape, s=0, f=flavour: make_values(shape, 1000 + s, f, torch.float32)  # noqa: E731
        compare = flavour == "normal"
        run_op(
            "linear_large",
            lambda o, x, w, b: o.linear(x, w, b),
            [v((1100, 600)), v((48, 600), 1), v((48,), 2)],
            1003,
            record,
            errors,
            compare,
        )
        run_op(
            "conv2d_large",
            lambda o, x, w, b: o.conv2d(x, w, b, 2, 1),
            [v((8, 3, 32, 32)), v((4, 3, 3, 3), 1), v((4,), 2)],
            1004,
            record,
            errors,
            compare,
        )
        indices = torch.randint(0, 50, (1100,), generator=torch.Generator().manual_seed(5))
        run_op(
            "embedding_large",
            lambda o, w, i=indices: o.embedding(i, w),
            [v((50, 16))],
            1005,
            record,
            errors,
            compare,
        )
        run_op(
            "layer_norm_large",
            lambda o, x, w, b: o.layer_norm(x, w, b, 1e-5),
            [v((1100, 32)), v((32,), 1), v((32,), 2)],
            1006,
            record,
            errors,
            compare,
        )
        run_op(
            "batch_norm_large",
            lambda o, x, w, b: batch_norm(o, x, w, b, 1009),
            [v((16, 8, 24, 24)), v((8,), 1) + 2, v((8,), 2)],
            1010,
            record,
            errors,
            compare,
        )
        run_op(
            "global_avg_pool_large",
            lambda o, x: o.global_avg_pool(x),
            [v((4, 16, 32, 32))],
            1011,
            record,
            errors,
            compare,
        )
        run_op(
            "softmax_large",
            lambda o, x: o.softmax(x, -1),
            [v((64, 600)) * 8],
            1012,
            record,
            errors,
            compare,
        )
        targets = torch.randint(0, 600, (64,), generator=torch.Generator().manual_seed(7))
        run_op(
            "cross_entropy_large",
            lambda o, x, t=targets: o.cross_entropy(x, t),
            [v((64, 600)) * 8],
            1008,
            record,
            errors,
            compare,
            1.0,
        )


def check_elementwise(dtype, seed, record):
    """Dropout and init (inherited from NativeOps) and the optimizer updates (repro's own)."""
    generator = torch.Generator().manual_seed(seed)
    p, g, m1, m2 = (make_values((257,), seed + i, "spread", dtype) for i in range(4))
    record.append(f"dropout:{digest(REPRO_OPS.dropout(p, 0.3, generator))}")
    record.append(
        f"uniform:{digest(REPRO_OPS.uniform((33, 17), 0.5, torch.Generator().manual_seed(seed), dtype))}"
    )
    record.append(
        f"adamw:{digest(*REPRO_OPS.adamw_update(p, g, m1, m2.abs(), 3, 1e-3, 0.9, 0.999, 1e-8, 0.01))}"
    )
    record.append(f"sgd:{digest(*REPRO_OPS.sgd_update(p, g, m1, 0.1, 0.9, 1e-4))}")


def main() -> int:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    record: list[str] = []
    errors: dict[str, float] = {}

    @settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=examples,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        m=st.integers(1, 40),
        k=st.integers(1, 70),
        n=st.integers(2, 20),
        seed=st.integers(0, 2**31),
        flavour=st.sampled_from(FLAVOURS),
    )
    def cases(m, k, n, seed, flavour):
        check_case(torch.float32, m, k, n, seed, flavour, record, errors)
        check_elementwise(torch.float32, seed, record)

    cases()
    check_large(record, errors)
    control = torch.rand(10**6, generator=torch.Generator().manual_seed(0)).sum()  # torch's own sum
    print(
        json.dumps(
            {
                "capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "kernel_isa": get_cpu_kernels().active_isa(),
                "hashes": record,
                "errors": errors,
                "control": digest(control),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
