"""Daemon-side dispute play against a real coordinator: a solver trained with `perturb-step` (in
the worker, under the job's profile) and an honest verifier each replay the segment once into a
trace and answer every move from it; the game pins step 7 and the perturbed tensor's chunk, the
solver supplies nothing it does not owe, the referee rules, the audit agrees. Playing again after
the game ends (a restarted daemon) changes nothing."""

from pathlib import Path

import pytest

from cli.audit_cmd import check_coordinator
from protocol.behaviours import PERTURB_STEP
from protocol.presets import example_job_spec_json
from protocol.spec import parse_job_spec
from protocol.state import compute_chunk_layout, decode_state
from protocol.wire import DisputeStatus
from sdk.dispute_play import process_solver_disputes, process_verifier_disputes
from sdk.store import CheckpointStore
from sdk.worker import run_worker
from tests.coordinator.market import TrainedJob, funded, open_verification, verify_segment
from tests.coordinator.server import REFEREE_TIMEOUT, client_factory, running_server

pytestmark = pytest.mark.slow
STEPS = 12


def train(directory: Path, spec_json: dict, behaviour: str | None) -> TrainedJob:
    run_worker(
        {"command": "train", "spec": spec_json, "dir": str(directory), "behaviour": behaviour},
        parse_job_spec(spec_json).profile,
        timeout=300,
    )
    return TrainedJob(spec_json, CheckpointStore.open(directory))


def test_daemons_play_a_dispute_to_the_referee(tmp_path):
    spec_json = example_job_spec_json("mlp", steps=STEPS)
    spec_json.update(checkpoint_interval=STEPS, batch_size=8, seed=5)
    spec_json["model"]["config"] = {"hidden": [8], "dropout": 0.0}
    cheat = train(tmp_path / "solver" / "jobs" / "x", spec_json, "perturb-step")
    honest = train(tmp_path / "honest", spec_json, None)
    assert cheat.entries()[1][1] != honest.entries()[1][1]
    with (
        running_server("sqlite", tmp_path) as server,
        client_factory(server.url, timeout=REFEREE_TIMEOUT) as make,
    ):
        submitter, solver, verifier = funded(make), funded(make), funded(make)
        jobs_dir = tmp_path / "solver" / "jobs"
        (jobs_dir / "x").rename(jobs_dir / cheat.job_id)
        cheat = TrainedJob(spec_json, CheckpointStore.open(jobs_dir / cheat.job_id))
        a = open_verification(submitter, solver, verifier, cheat)
        true_root = honest.entries()[1][1]
        salt = verify_segment(verifier, a.id, true_root)
        solver.upload_checkpoint(cheat.job_id, 1, STEPS, cheat.checkpoint_bytes(1), cheat.proof(1))
        verifier.reveal_verification(a.id, true_root, salt)
        for _ in range(30):
            process_solver_disputes(solver, jobs_dir, tmp_path / "solver" / "work", "perturb-step")
            process_verifier_disputes(verifier, tmp_path / "verifier" / "work")
        [view] = verifier.list_disputes(status=None)
        state = decode_state(honest.checkpoint_bytes(1))
        perturbed = min(k for k in state if k.startswith("param/"))
        chunk = next(c.index for c in compute_chunk_layout(state) if c.tensor == perturbed)
        assert (view.status, view.winner) == (DisputeStatus.RULED, "verifier")
        assert (view.dispute_step, view.dispute_chunk) == (PERTURB_STEP, chunk)
        assert process_solver_disputes(solver, jobs_dir, tmp_path / "solver" / "work") == 0
        assert solver.get_job(cheat.job_id).outcome == "solver_caught_by_referee"
        report = check_coordinator(verifier)
        assert report.ok, report.problems
