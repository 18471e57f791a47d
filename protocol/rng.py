"""Every random choice in training derives from (job seed, purpose, step, ...) by hashing.

That is what lets any segment replay from its starting checkpoint alone: nothing carries
generator state from one step to the next.
"""

import hashlib

import torch


def compute_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for one purpose, e.g. compute_seed(job_seed, "dropout", step, layer)."""
    text = "/".join(["veritrain-rng", str(seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def make_generator(seed: int, *labels: object) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(compute_seed(seed, *labels))
    return generator


def compute_batch_indices(seed: int, step: int, dataset_size: int, batch_size: int) -> torch.Tensor:
    """Indices of the examples in step `step`'s batch, sampled with replacement.

    Pure integer hashing, so the data order is identical on every CPU and thread count.
    """
    digest_stream = hashlib.shake_256(f"veritrain-batch/{seed}/{step}".encode())
    raw = digest_stream.digest(8 * batch_size)
    indices = [
        int.from_bytes(raw[8 * i : 8 * i + 8], "little") % dataset_size for i in range(batch_size)
    ]
    return torch.tensor(indices, dtype=torch.int64)
