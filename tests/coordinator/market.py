"""Helpers for market tests: a tiny job trained once by the real worker, and funded parties."""

import secrets
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.training import compute_initial_state_root
from protocol.trajectory import (
    Commitment,
    compute_trajectory_proof,
    compute_trajectory_root,
    sign_commitment,
)
from protocol.types import JobId, Root, StepIndex
from protocol.wire import JobState, compute_verification_commit
from sdk.client import CoordinatorClient
from sdk.responses import AssignmentView, JobEventView
from sdk.store import CheckpointStore
from sdk.worker import run_worker


def tiny_spec_json(seed: int = 42) -> dict:
    spec = example_job_spec_json("mlp", steps=2)
    spec.update(checkpoint_interval=1, seed=seed, batch_size=8)
    spec["model"]["config"] = {"hidden": [8], "dropout": 0.0}
    return spec


@dataclass
class TrainedJob:
    spec_json: dict
    store: CheckpointStore

    @property
    def job_id(self) -> str:
        return compute_job_id(parse_job_spec(self.spec_json)).hex()

    @property
    def profile(self) -> str:
        return parse_job_spec(self.spec_json).profile.label

    def entries(self) -> list[tuple[StepIndex, Root]]:
        return [(e.step, e.state_root) for e in self.store.entries()]

    def checkpoint_bytes(self, index: int) -> bytes:
        return self.store.checkpoint_path(index).read_bytes()

    def proof(self, index: int) -> list[bytes]:
        return compute_trajectory_proof(self.entries(), index)

    def commitment(self) -> Commitment:
        m = self.store.manifest
        return Commitment(
            JobId(bytes.fromhex(self.job_id)),
            Root(bytes.fromhex(m["trajectory_root"])),
            len(self.entries()),
            Root(bytes.fromhex(m["final_model_root"])),
        )


def train_tiny_job(directory: Path, seed: int = 42, spec_json: dict | None = None) -> TrainedJob:
    spec_json = spec_json or tiny_spec_json(seed)
    run_worker(
        {"command": "train", "spec": spec_json, "dir": str(directory)},
        parse_job_spec(spec_json).profile,
        timeout=120,
    )
    return TrainedJob(spec_json, CheckpointStore.open(directory))


def funded(make_client, amount: int = 10_000) -> CoordinatorClient:
    client = make_client(SigningKey.generate())
    client.faucet(amount)
    return client


def commit_signed(
    solver: CoordinatorClient,
    job: TrainedJob,
    commitment: Commitment | None = None,
    entries: list[tuple[StepIndex, Root]] | None = None,
) -> JobEventView:
    """Commit `job`'s trajectory, or `commitment` over `entries` (a forged one)."""
    commitment, entries = commitment or job.commitment(), entries or job.entries()
    return solver.commit(
        job.job_id,
        commitment.to_json(),
        sign_commitment(solver.key, commitment),
        entries[0][1],
        compute_trajectory_proof(entries, 0),
    )


def untrained_trajectory(spec_json: dict, count: int) -> tuple[Commitment, list]:
    """A commitment no training produced: the spec's true checkpoint 0 (the coordinator checks
    that one), then `count - 1` random roots. For tests and benchmarks of the market alone."""
    spec = parse_job_spec(spec_json)
    entries = [(StepIndex(0), compute_initial_state_root(spec))]
    entries += [(StepIndex(i), Root(secrets.token_bytes(32))) for i in range(1, count)]
    commitment = Commitment(
        JobId(compute_job_id(spec)),
        compute_trajectory_root(entries),
        count,
        Root(secrets.token_bytes(32)),
    )
    return commitment, entries


def commit_untrained(
    solver: CoordinatorClient, spec_json: dict, count: int, **kwargs
) -> JobEventView:
    """Commit `untrained_trajectory` (`kwargs` go to the SDK's commit, e.g. losses=)."""
    commitment, entries = untrained_trajectory(spec_json, count)
    return solver.commit(
        commitment.job_id.hex(),
        commitment.to_json(),
        sign_commitment(solver.key, commitment),
        entries[0][1],
        compute_trajectory_proof(entries, 0),
        **kwargs,
    )


def award_tiny_job(submitter, solver, stake: int = 400, seed: int = 62) -> tuple[dict, str]:
    """Post a tiny job (bounty 1000, fee 50) and award it to `solver` at price 600 and `stake`;
    returns (its spec, its id)."""
    spec = tiny_spec_json(seed=seed)
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    submitter.submit_job(spec, 1000, min_stake=stake, verifier_fee=50, bidding_s=30)
    solver.bid(job_id, 600, stake, parse_job_spec(spec).profile.label)
    solver.advance_clock(31)
    solver.award(job_id)
    return spec, job_id


def slash_a_no_show_solver(submitter, solver, stake: int = 400, seed: int = 62) -> str:
    """A job whose solver never commits: the sweeper slashes its stake (half to the submitter,
    half burned). Returns the job id."""
    _, job_id = award_tiny_job(submitter, solver, stake, seed)
    solver.advance_clock(24 * 3600)
    solver.sweep()
    assert solver.get_job(job_id).state == JobState.FAILED
    return job_id


def verify_segment(verifier: CoordinatorClient, assignment_id: int, root: bytes) -> bytes:
    """Commit to `root` with a fresh salt; returns the salt for the reveal."""
    salt = secrets.token_bytes(16)
    verifier.commit_verification(assignment_id, compute_verification_commit(root, salt))
    return salt


def open_verification(
    submitter: CoordinatorClient,
    solver: CoordinatorClient,
    verifier: CoordinatorClient,
    job: TrainedJob,
    verifier_stake: int = 500,
) -> AssignmentView:
    """Post `job` (one segment drawn), award it to `solver`, commit, upload the drawn segment's
    start (the one checkpoint asked for besides the final model); returns the verifier's
    assignment, awaiting its commit."""
    verifier.register_verifier([job.profile], verifier_stake)
    submitter.submit_job(job.spec_json, 1000, min_stake=400, verifier_fee=50, bidding_s=30)
    solver.bid(job.job_id, 600, 400, job.profile)
    solver.advance_clock(31)
    solver.award(job.job_id)
    commit_signed(solver, job)
    [assignment] = verifier.get_assignments()
    start = assignment.segment
    step = job.entries()[start][0]
    solver.upload_checkpoint(job.job_id, start, step, job.checkpoint_bytes(start), job.proof(start))
    return assignment
