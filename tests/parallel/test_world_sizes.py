"""Any allowed world size trains the trajectory of one process (docs/parallel.md).

Every cell runs the real CLI: `veritrain job run-local --world-size W --threads T`, ranks spawned
by torch.multiprocessing and talking over gloo. Four ranks share the machine's cores.
"""

import pytest

from tests.parallel.runs import blocked_spec_json, train, write_spec

STEPS = 2
BATCH_BLOCKS = 4
CELLS = [(world, threads) for world in (1, 2, 4) for threads in (1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt-tiny"])
def test_one_trajectory_root_for_every_world_size_and_thread_count(model, tmp_path):
    spec_path = write_spec(tmp_path, blocked_spec_json(model, STEPS, BATCH_BLOCKS))
    roots = {}
    for world, threads in CELLS:
        out = tmp_path / f"run-w{world}-t{threads}"
        result = train(spec_path, out, "--world-size", str(world), "--threads", str(threads))
        assert result["complete"] and result["checkpoints"] == STEPS + 1
        roots[(world, threads)] = (result["trajectory_root"], result["final_state_root"])
    assert len(set(roots.values())) == 1, roots
