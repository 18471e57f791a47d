"""sdk.parallel's exchange on real gloo process groups: reduce-scatter then all-gather leaves every
rank with the fold of all ranks' subtotals in rank order, bit for bit, whatever the padding."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from protocol.parallel import flatten_terms, fold_pairwise, unflatten_terms
from sdk.parallel import all_gather_slices, compute_local_init_method, reduce_scatter_in_order

WORLD = 4
SHAPES = [(3, 5), (7,), ()]  # 23 values: not a multiple of the world size


def subtotals_of(rank: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(rank)
    return [
        (torch.rand(shape, generator=generator) - 0.5) * 2.0 ** (10 * rank - 15) for shape in SHAPES
    ]


def exchange_rank(rank: int, init_method: str, results) -> None:
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD)
    try:
        flat = flatten_terms(subtotals_of(rank), WORLD)
        mine = reduce_scatter_in_order(flat)[: flat.numel() // WORLD]
        total = unflatten_terms(all_gather_slices(mine), [torch.Size(s) for s in SHAPES])
        # plain lists: a tensor would travel as shared memory that dies with this process
        results.put((rank, [(tuple(t.shape), t.reshape(-1).tolist()) for t in total]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_gets_the_rank_ordered_fold():
    context = torch_mp.get_context("spawn")
    results = context.SimpleQueue()
    torch_mp.start_processes(
        exchange_rank, args=(compute_local_init_method(), results), nprocs=WORLD
    )
    received = {
        rank: [torch.tensor(values, dtype=torch.float32).reshape(shape) for shape, values in total]
        for rank, total in (results.get() for _ in range(WORLD))
    }
    expected = [
        fold_pairwise([subtotals_of(rank)[i] for rank in range(WORLD)]) for i in range(len(SHAPES))
    ]
    for rank in range(WORLD):
        assert [t.shape for t in received[rank]] == [torch.Size(s) for s in SHAPES]
        assert all(torch.equal(a, b) for a, b in zip(received[rank], expected, strict=True))
