"""Initial weights for fine-tuning (`model.weights` in a job spec): a safetensors file holding
every trained parameter by name, and optionally batch-norm buffers, each of the exact shape and
dtype the model has. Parsed with safetensors only, so reading a peer's file runs no code."""

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from protocol.errors import InvalidSpec

FIELD = "model.weights"


def read_weights_file(
    blob: bytes,
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    buffers: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, buffers given) from the file; InvalidSpec naming the first mismatch."""
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise InvalidSpec(f"not a readable safetensors file ({err})", FIELD) from err
    missing = sorted(set(shapes) - set(tensors))
    unknown = sorted(set(tensors) - set(shapes) - set(buffers))
    if missing or unknown:
        raise InvalidSpec(
            f"the file must hold the model's parameters: missing {missing[:5]}, unknown {unknown[:5]}",
            FIELD,
        )
    wanted = {**{n: (s, dtype) for n, s in shapes.items()}}
    wanted.update({n: (tuple(b.shape), b.dtype) for n, b in buffers.items()})
    for name, tensor in tensors.items():
        shape, kind = wanted[name]
        if tuple(tensor.shape) != shape or tensor.dtype != kind:
            raise InvalidSpec(
                f"'{name}' is {tensor.dtype} {list(tensor.shape)}; the model has {kind} {list(shape)}",
                FIELD,
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidSpec(f"'{name}' holds a NaN or an infinity", FIELD)
    params = {n: tensors[n] for n in shapes}
    return params, {n: t for n, t in tensors.items() if n in buffers}


def check_weights_file(blob: bytes) -> bool:
    """The file parses and holds only finite float tensors (what any model's weights are)."""
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError):
        return False
    return bool(tensors) and all(
        t.dtype in (torch.float32, torch.float64) and bool(torch.isfinite(t).all())
        for t in tensors.values()
    )
