"""Several hosts: one `veritrain job run-local` per rank meeting at a rendezvous, by flags or by
torchrun's variables, trains the trajectory of one process; only rank 0 writes its --out."""

import json
import os
import subprocess

import pytest

from sdk.parallel import compute_local_init_method
from tests.parallel.runs import ROOT, blocked_spec_json, run_local_command, train, write_spec


@pytest.mark.slow
def test_ranks_started_apart_meet_and_train_the_one_process_trajectory(tmp_path):
    spec_path = write_spec(tmp_path, blocked_spec_json("gpt-tiny", 2, 2))
    rendezvous = compute_local_init_method()  # tcp://127.0.0.1:PORT, as a remote host's would be
    host, port = rendezvous.removeprefix("tcp://").split(":")
    torchrun_env = {**os.environ, "MASTER_ADDR": host, "MASTER_PORT": port}
    ranks = [
        subprocess.Popen(  # rank 0 by flags
            run_local_command(
                spec_path,
                tmp_path / "rank0",
                "--world-size",
                "2",
                "--rendezvous",
                rendezvous,
                "--rank",
                "0",
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(  # rank 1 as torchrun starts it
            run_local_command(spec_path, tmp_path / "rank1"),
            cwd=ROOT,
            env={**torchrun_env, "RANK": "1", "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], [err for _, err in outputs]
    rank0, rank1 = (json.loads(out) for out, _ in outputs)
    one_process = train(spec_path, tmp_path / "one")
    assert rank0["trajectory_root"] == one_process["trajectory_root"]
    assert rank1 == {"rank": 1, "world_size": 2, "resumed_from_step": 0}
    assert not (tmp_path / "rank1").exists()
