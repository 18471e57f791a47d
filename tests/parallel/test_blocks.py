"""The pure rules of blocked batches (protocol.parallel, contract fo2) and fo1 left as it was."""

import copy
import dataclasses

import pytest
import torch

from protocol.errors import InvalidInput, InvalidSpec
from protocol.parallel import (
    check_world_size,
    compute_block_rows,
    compute_rank_blocks,
    compute_usable_world_size,
    flatten_terms,
    fold_pairwise,
    get_allowed_world_sizes,
    unflatten_terms,
)
from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, encode_job_spec, parse_job_spec
from protocol.state import PARAM_PREFIX, compute_state_root
from protocol.training import build_program, get_param_names
from sdk.worker import get_runnable_profiles
from tests.parallel.runs import blocked_spec_json

# Recorded with the code before batch blocks existed (protocol/spec.py and protocol/training.py
# at the last commit without them): example repro spec, 3 steps, job id and the state root after
# 2 steps. batch_blocks absent or 1 must reproduce both.
FO1_BEFORE_BLOCKS = {
    "mlp": (
        "dab7359c3257bce8c56f8159245514aa7964e33df805caccb894f5751fc3a1a3",
        "9b2d6b7f09a6aadf21ce68a71c971e2d86c2fc56a4c0019e14c24f9a63de536c",
    ),
    "cnn": (
        "c915e6e2cf4fdfd36deee43ee80d3f724e0546714988b6ae264dd5206c1401d0",
        "ec2d40caa265a33cdcef18fe2c01f7dcc777546e470412d50738576905ca316d",
    ),
    "gpt-tiny": (
        "bb4b7d24d0fa368af86bb7b565eaa819a4045bffdc0458b9b6f909afc0d3bfa2",
        "22dd9479c820d5b390d4a9b69cdcbfcd08e0a6f604748480787169f73c403901",
    ),
}


def state_root_after(spec, steps: int) -> str:
    program = build_program(spec)
    state = program.initial_state()
    for _ in range(steps):
        state = program.step(state)
    return compute_state_root(state).hex()


@pytest.mark.parametrize("model", sorted(FO1_BEFORE_BLOCKS))
@pytest.mark.parametrize("blocks", [None, 1])
def test_one_block_is_fo1_exactly_as_before(model, blocks):
    spec_json = example_job_spec_json(model, 3, "repro")
    if blocks is not None:
        spec_json["profile"]["batch_blocks"] = blocks
    spec = parse_job_spec(spec_json)
    job_id, root = FO1_BEFORE_BLOCKS[model]
    assert spec.profile.label == "repro:fo1:torch-2.13.0:float32"
    assert b"batch_blocks" not in encode_job_spec(spec)
    assert compute_job_id(spec).hex() == job_id
    assert state_root_after(spec, 2) == root


def test_blocked_profiles_have_their_own_label_and_job_id():
    spec = parse_job_spec(blocked_spec_json("mlp", 3, 4))
    fo1 = parse_job_spec(example_job_spec_json("mlp", 3, "repro") | {"checkpoint_interval": 1})
    assert spec.profile.label == "repro:fo2:torch-2.13.0:float32"
    assert compute_job_id(spec) != compute_job_id(fo1)
    assert parse_job_spec(__import__("json").loads(encode_job_spec(spec))) == spec
    assert spec.profile.label in get_runnable_profiles()  # daemons advertise fo2


@pytest.mark.parametrize(
    ("profile", "batch_size", "message"),
    [
        ({"kind": "repro", "batch_blocks": 3}, 30, "power of two"),
        ({"kind": "repro", "batch_blocks": 0}, 32, "between 1 and"),
        ({"kind": "repro", "batch_blocks": 64}, 32, "must divide batch_size"),
        ({"kind": "repro", "batch_blocks": True}, 32, "between 1 and"),
        ({"kind": "pinned", "batch_blocks": 2}, 32, "only repro profiles"),
    ],
)
def test_bad_block_counts_name_the_field(profile, batch_size, message):
    spec = example_job_spec_json("mlp", 3, "repro") | {"batch_size": batch_size}
    spec["profile"] = profile
    with pytest.raises(InvalidSpec, match=message) as caught:
        parse_job_spec(spec)
    assert caught.value.field == "profile.batch_blocks"


def test_allowed_world_sizes_are_the_powers_of_two_dividing_the_blocks():
    def spec(blocks):
        return parse_job_spec(blocked_spec_json("mlp", 3, blocks))

    assert get_allowed_world_sizes(spec(1)) == [1]
    assert get_allowed_world_sizes(spec(8)) == [1, 2, 4, 8]
    assert compute_usable_world_size(spec(4), 16) == 4
    assert compute_usable_world_size(spec(4), 3) == 2
    assert compute_usable_world_size(spec(1), 8) == 1
    with pytest.raises(InvalidInput, match=r"must be one of 1, 2, 4$") as caught:
        check_world_size(spec(4), 8)
    assert caught.value.field == "world_size" and "\n" not in str(caught.value)


def test_ranks_own_aligned_contiguous_runs_of_blocks_and_rows():
    spec = parse_job_spec(blocked_spec_json("mlp", 3, 8))  # batch 32: 4 rows a block
    assert [compute_rank_blocks(spec, 4, r) for r in range(4)] == [
        range(0, 2),
        range(2, 4),
        range(4, 6),
        range(6, 8),
    ]
    rows = [compute_block_rows(spec, b) for b in range(8)]
    assert rows[0] == slice(0, 4) and rows[7] == slice(28, 32)


def spread_values(count: int, seed: int) -> list[torch.Tensor]:
    """Values over many magnitudes, where the order of a sum decides its low bits."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(37, generator=generator) - 0.5) * 2.0 ** (8 * i % 40 - 20) for i in range(count)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_subtrees_folded_apart_give_the_fold_of_the_whole(seed):
    terms = spread_values(8, seed)
    whole = fold_pairwise(terms)
    for world in (2, 4, 8):
        per_rank = 8 // world
        subtotals = [fold_pairwise(terms[r * per_rank : (r + 1) * per_rank]) for r in range(world)]
        assert torch.equal(fold_pairwise(subtotals), whole)
    in_place = fold_pairwise([t.clone() for t in terms], in_place=True)
    assert torch.equal(in_place, whole)


def test_the_fold_order_is_visible_in_the_bits():
    """The control: summing left to right instead gives other bits, so the tests above could fail."""
    differs = 0
    for seed in range(5):
        terms = spread_values(8, seed)
        chain = terms[0]
        for term in terms[1:]:
            chain = chain + term
        differs += not torch.equal(chain, fold_pairwise(terms))
    assert differs > 0


def test_a_fold_needs_a_power_of_two_of_terms():
    with pytest.raises(InvalidInput):
        fold_pairwise(spread_values(3, 0))


def test_flattening_pads_to_equal_slices_and_round_trips():
    tensors = [torch.arange(6.0).reshape(2, 3), torch.tensor(7.0), torch.ones(4)]
    flat = flatten_terms(tensors, 4)
    assert flat.numel() == 12 and flat[-1] == 0
    back = unflatten_terms(flat, [t.shape for t in tensors])
    assert all(torch.equal(a, b) for a, b in zip(back, tensors, strict=True))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_blocked_gradient_is_the_batch_mean_gradient(model):
    """fo2's total over all blocks, scaled by 1/n, is the full batch's gradient up to rounding:
    every block counts once (no dropout here, so both see the same network)."""
    spec_json = blocked_spec_json(model, 3, 4)
    spec_json["model"]["config"] = copy.deepcopy(spec_json["model"]["config"]) | (
        {"dropout": 0.0} if model == "mlp" else {}
    )
    blocked = build_program(parse_job_spec(spec_json))
    spec_json["profile"].pop("batch_blocks")
    whole = build_program(parse_job_spec(spec_json))
    state = blocked.initial_state()
    *block_grads, _loss = blocked.compute_block_subtotal(state, range(4))
    names = get_param_names(state)
    params = {n: state[PARAM_PREFIX + n].detach().requires_grad_(True) for n in names}
    grads = whole.ops.gradients(whole.compute_loss(params, 0), [params[n] for n in names])
    for name, total, grad in zip(names, block_grads, grads, strict=True):
        torch.testing.assert_close(total / 4, grad, rtol=1e-4, atol=1e-6, msg=name)


def test_one_process_fo2_is_its_own_trajectory():
    spec = parse_job_spec(blocked_spec_json("gpt-tiny", 2, 4))
    fo1 = dataclasses.replace(spec, profile=dataclasses.replace(spec.profile, batch_blocks=1))
    assert state_root_after(spec, 2) == state_root_after(spec, 2)
    assert state_root_after(spec, 2) != state_root_after(fo1, 2)
