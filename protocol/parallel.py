"""Blocked batches (contract fo2): the pure rules that let any allowed world size train the bits
of one process. See docs/parallel.md.

A step's batch is cut into `profile.batch_blocks` = n equal contiguous row blocks. Each block's
gradients are an fo1 step's gradients on that block; the n of them are summed by one fixed
pairwise tree over the block index and scaled by 1/n. Because n and the world size w are powers
of two and rank r owns the aligned run of blocks [r·n/w, (r+1)·n/w), every subtree a rank folds
locally is a subtree of that one tree, and the top log2(w) levels are the same fold over the
ranks' subtotals in rank order: the sum cannot depend on w.

No process groups here (protocol/ is sans-I/O): `sdk.parallel` moves the tensors.
"""

import torch
from torch import Tensor

from protocol.errors import InvalidInput
from protocol.spec import JobSpec


def get_allowed_world_sizes(spec: JobSpec) -> list[int]:
    """World sizes that give this job's trajectory: powers of two dividing its batch blocks (a
    fo1 job, and every pinned job, has one block: one process)."""
    blocks = spec.profile.batch_blocks
    return [1 << k for k in range(blocks.bit_length()) if blocks % (1 << k) == 0]


def check_world_size(spec: JobSpec, world_size: int) -> None:
    """Raises InvalidInput (one line) when `world_size` ranks cannot train this job bit-exactly."""
    allowed = get_allowed_world_sizes(spec)
    if world_size not in allowed:
        raise InvalidInput(
            f"{world_size} ranks cannot train this job: its batch of {spec.batch_size} rows is "
            f"cut into {spec.profile.batch_blocks} block(s) (profile.batch_blocks), so the world "
            f"size must be one of {', '.join(map(str, allowed))}",
            "world_size",
        )


def compute_usable_world_size(spec: JobSpec, most: int) -> int:
    """The largest allowed world size not above `most` (a solver with more ranks idles some)."""
    return max(w for w in get_allowed_world_sizes(spec) if w <= max(1, most))


def compute_block_rows(spec: JobSpec, block: int) -> slice:
    """Rows of the step's batch that block `block` holds (contiguous, equal sizes)."""
    rows = spec.batch_size // spec.profile.batch_blocks
    return slice(block * rows, (block + 1) * rows)


def compute_rank_blocks(spec: JobSpec, world_size: int, rank: int) -> range:
    """The aligned run of blocks rank `rank` of `world_size` owns: a whole subtree of the fold."""
    per_rank = spec.profile.batch_blocks // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def fold_pairwise(terms: list[Tensor], in_place: bool = False) -> Tensor:
    """Sum a power-of-two number of same-shaped tensors level by level: (0+1), (2+3), …, then the
    pairs of those, like the sum16 lane fold. Elementwise adds are correctly rounded on every
    device, so the bits depend on the order only, and the order on the count only. `in_place`
    accumulates into the left terms (same adds, same bits, no allocation)."""
    count = len(terms)
    if count == 0 or count & (count - 1):
        raise InvalidInput(f"a pairwise fold needs a power of two of terms, got {count}", "terms")
    while len(terms) > 1:
        pairs = [(terms[i], terms[i + 1]) for i in range(0, len(terms), 2)]
        terms = [left.add_(right) if in_place else left + right for left, right in pairs]
    return terms[0]


def flatten_terms(tensors: list[Tensor], parts: int, out: Tensor | None = None) -> Tensor:
    """One contiguous 1-D buffer of all values, zero-padded to a multiple of `parts` so it splits
    into equal slices (padding is summed with padding and dropped by `unflatten_terms`). `out`:
    a buffer of that length to reuse (its padding is zeroed again)."""
    count = sum(t.numel() for t in tensors)
    length = count + (-count) % parts
    if out is None:
        out = tensors[0].new_empty(length)
    torch.cat([t.reshape(-1) for t in tensors], out=out[:count])
    out[count:length].zero_()
    return out


def unflatten_terms(flat: Tensor, shapes: list[torch.Size]) -> list[Tensor]:
    """The inverse of `flatten_terms`: views of `flat` with these shapes, read in order."""
    out, start = [], 0
    for shape in shapes:
        count = shape.numel()
        out.append(flat[start : start + count].view(shape))
        start += count
    return out
