"""The solver daemon: bid, train, commit, serve checkpoints, defend disputes, get paid.

One loop, every `poll_s`: bid on open jobs it can run; for each job it bid on, do what the job's
state asks (train and commit once awarded, upload the checkpoints its verifiers need); play its
open disputes. Everything it must remember lives in `<store>/state.json` (atomic rewrites) and the
run directories `<store>/jobs/<job id>`, so after kill -9 it resumes training from the last
checkpoint and picks up every obligation; the coordinator keeps the rest. SIGTERM stops it
between two HTTP calls (training is abandoned at once and resumes on restart).
"""

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocol.behaviours import load_behaviour
from protocol.economics import compute_max_price
from protocol.errors import InvalidSpec
from protocol.parallel import compute_usable_world_size
from protocol.retention import compute_wanted_checkpoints
from protocol.spec import JobSpec, parse_job_spec
from protocol.state import compute_layout_bytes
from protocol.training import check_runnable_spec
from protocol.trajectory import Commitment, compute_trajectory_proof, sign_commitment
from protocol.types import JobId, Root
from protocol.wire import FINAL_JOB_STATES, JobState, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.daemon import (
    Daemon,
    DaemonStopping,
    compute_default_max_state_bytes,
    describe_state_too_large,
)
from sdk.durable import DurableState
from sdk.responses import JobView
from sdk.store import CheckpointStore, read_job_files
from sdk.worker import get_runnable_profiles, run_worker
from solver import disputes

# A refused bid that may succeed another round (funds arrive, a conflict clears) or never will
# (wrong profile, price or stake, bidding closed): skip the job this round. Any other refusal
# (401, 403, ...) is a problem of ours that recording the job as bid on would only hide.
BID_DECLINED = frozenset(
    {
        ProblemCode.INVALID_INPUT,
        ProblemCode.PROFILE_MISMATCH,
        ProblemCode.INSUFFICIENT_FUNDS,
        ProblemCode.INVALID_STATE,
        ProblemCode.WRITE_CONFLICT,
    }
)
# Owed checkpoints the coordinator will not take yet (a segment's verifiers have not all
# committed) or any more (the job moved on): the next round asks again.
UPLOAD_NOT_NOW = frozenset({ProblemCode.INVALID_STATE})
LOSSES_FILE = "losses.json"  # written by sdk.tasks' train ({step: loss}); not imported: torch
MAX_REPORTED_LOSSES = 1_000  # points of the loss curve sent with the commitment


def read_reported_losses(
    run_dir: Path, limit: int = MAX_REPORTED_LOSSES
) -> dict[int, float] | None:
    """The run's loss curve thinned to at most `limit` evenly spaced points (first and last
    kept), finite values only; None when there is none or it cannot be read. Reported with the
    commitment for the dashboard: it is not signed and nobody verifies it."""
    try:
        raw = json.loads((run_dir / LOSSES_FILE).read_text())
        curve = {
            int(step): float(loss)
            for step, loss in raw.items()
            if isinstance(loss, int | float) and math.isfinite(loss)
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    steps = sorted(s for s in curve if s >= 0)
    if not steps:
        return None
    if len(steps) > limit:
        span = (len(steps) - 1) / (limit - 1)
        steps = [steps[round(i * span)] for i in range(limit)]
    return {step: curve[step] for step in steps}


@dataclass
class SolverConfig:
    price: int
    stake: int
    profiles: list[str] = field(default_factory=get_runnable_profiles)
    max_jobs: int = 1
    behaviour: str = "honest"
    poll_s: float = 1.0
    heartbeat_s: float = 5.0
    only_jobs: list[str] | None = None  # bid only on these job ids (demos and tests)
    world_size: int = 1  # local data-parallel ranks; a job runs on the most its batch allows
    max_state_bytes: int = field(default_factory=compute_default_max_state_bytes)
    prune_finished: bool = False  # delete a job's checkpoints and traces once it is final


class SolverDaemon(Daemon):
    log = logging.getLogger("veritrain.solver")

    def __init__(self, client: CoordinatorClient, store: Path, config: SolverConfig):
        self.client, self.store, self.config = client, store, config
        self.behaviour = load_behaviour(config.behaviour, "solver")
        self.state = DurableState(store / "state.json", {"jobs": {}, "refused": {}})
        self.state.data.setdefault("refused", {})  # a state file from before refusals were kept
        super().__init__()
        self.poll_s = config.poll_s
        self._last_heartbeat = 0.0

    def step(self) -> None:
        self._bid_on_open_jobs()
        for job_id, record in list(self.state.data["jobs"].items()):
            if record["state"] not in FINAL_JOB_STATES:
                self._advance(job_id)
        disputes.process_open_disputes(self)

    # --- bidding ---------------------------------------------------------------------------
    def _active_jobs(self) -> int:
        return sum(r["state"] not in FINAL_JOB_STATES for r in self.state.data["jobs"].values())

    def jobs_held(self) -> int:
        """Jobs awarded to it and not finished (a bid alone holds nothing yet)."""
        records = self.state.data["jobs"].values()
        return sum(r["state"] not in FINAL_JOB_STATES | {JobState.BIDDING} for r in records)

    def _bid_on_open_jobs(self) -> None:
        for profile in self.config.profiles:
            for job in self.client.list_jobs(state=JobState.BIDDING, profile=profile):
                if self._active_jobs() >= self.config.max_jobs:
                    return
                if self._wants(job) and self._can_run(job.job_id):
                    self._bid(job)

    def _wants(self, job: JobView) -> bool:
        return (
            job.job_id not in self.state.data["jobs"]
            and job.job_id not in self.state.data["refused"]
            and job.submitter != self.client.public_key
            and job.min_stake <= self.config.stake
            # a price over the job's cap would be refused: skip it before building anything
            and self.config.price
            <= compute_max_price(job.bounty, job.verifier_fee, job.num_verifiers)
            and (self.config.only_jobs is None or job.job_id in self.config.only_jobs)
        )

    def _can_run(self, job_id: str) -> bool:
        """The job's spec builds into a training program within the limits (the validator the
        coordinator runs at submission); a job that does not is remembered as refused, never bid
        on: winning it would mean failing every step and being slashed."""
        spec_json = self.client.get_job(job_id).spec  # list views do not carry the spec
        try:
            spec = parse_job_spec(spec_json)
            files = read_job_files(self.client.download_job_files(spec, self.files_dir))
            program = check_runnable_spec(spec, files)
        except InvalidSpec as err:
            return self._refuse(job_id, str(err))
        state_bytes = compute_layout_bytes(program.state_layout())
        too_large = describe_state_too_large(state_bytes, self.config.max_state_bytes)
        return self._refuse(job_id, too_large) if too_large else True

    def _refuse(self, job_id: str, reason: str) -> bool:
        self.log.warning(
            "refusing job %s: cannot run it (%s)",
            job_id[:12],
            reason,
            extra={"event": "job.refused", "job_id": job_id},
        )
        self.state.data["refused"][job_id] = reason[:256]
        self.state.save()
        return False

    def _bid(self, job: JobView) -> None:
        """Bid and remember the job; a bid already on file (a restart lost its record) counts."""
        try:
            self.client.bid(job.job_id, self.config.price, self.config.stake, job.profile)
        except CoordinatorError as err:
            if err.problem_code in BID_DECLINED:
                self.log.info(
                    "not bidding on %s this round: %s",
                    job.job_id[:12],
                    err,
                    extra={
                        "event": "job.bid_declined",
                        "job_id": job.job_id,
                        "code": str(err.problem_code),
                    },
                )
                return
            if err.problem_code != ProblemCode.ALREADY_EXISTS:
                raise
        self.log.info(
            "bid %d (stake %d) on job %s",
            self.config.price,
            self.config.stake,
            job.job_id[:12],
            extra={
                "event": "job.bid",
                "job_id": job.job_id,
                "price": self.config.price,
                "stake": self.config.stake,
            },
        )
        self.state.data["jobs"][job.job_id] = {"state": JobState.BIDDING}
        self.state.save()

    # --- one job ---------------------------------------------------------------------------
    def _advance(self, job_id: str) -> None:
        job = self.client.get_job(job_id)
        if job.state is not JobState.BIDDING and job.solver != self.client.public_key:
            self._record(job_id, JobState.CANCELLED)  # lost the award (its stake came back)
        elif job.state in FINAL_JOB_STATES:
            self._record(job_id, job.state, outcome=job.outcome)
            if self.config.prune_finished:
                self._prune(job_id)
        elif job.state is JobState.AWARDED:
            self._train_and_commit(job)
        elif job.state is JobState.VERIFYING:
            self._upload_owed_checkpoints(job_id)

    def _prune(self, job_id: str) -> None:
        """A final job is never asked for anything again (docs/production.md, "Checkpoint
        retention"): its checkpoints and dispute traces go."""
        dirs = [self.run_dir(job_id), *(self.store / "disputes").glob(f"{job_id}-*")]
        freed = sum(f.stat().st_size for d in dirs for f in d.rglob("*") if f.is_file())
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.log.info(
            "pruned job %s (%d bytes)",
            job_id[:12],
            freed,
            extra={"event": "job.pruned", "job_id": job_id, "bytes": freed},
        )

    def _record(self, job_id: str, state: str, **extra) -> None:
        if self.state.data["jobs"][job_id].get("state") != state:
            self.log.info(
                "job %s: %s%s",
                job_id[:12],
                state,
                f" ({extra['outcome']})" if extra.get("outcome") else "",
                extra={"event": "job.state", "job_id": job_id, "state": str(state), **extra},
            )
        self.state.data["jobs"][job_id] = {
            **self.state.data["jobs"][job_id],
            "state": state,
            **extra,
        }
        self.state.save()

    def run_dir(self, job_id: str) -> Path:
        return self.store / "jobs" / job_id

    @property
    def files_dir(self) -> Path:
        """Job files (datasets, graphs, weights) by SHA-256, shared by every job naming them."""
        return self.store / "files"

    def _train_and_commit(self, job: JobView) -> None:
        job_id, spec_json = job.job_id, job.spec
        request = {
            "command": "train",
            "spec": spec_json,
            "dir": str(self.run_dir(job_id)),
            "behaviour": None if self.behaviour.honest else self.behaviour.name,
            "world_size": self._world_size_for(parse_job_spec(spec_json)),
            "file_paths": self.client.download_job_files(parse_job_spec(spec_json), self.files_dir),
        }
        if self.metrics:  # a record still "training": the last run was cut short (crash, kill)
            self.metrics.observe_worker_start(
                job_id, self.state.data["jobs"][job_id]["state"] == "training"
            )
        self._record(job_id, "training")
        try:
            run_worker(
                request,
                parse_job_spec(spec_json).profile,
                on_progress=lambda event: self._on_training_progress(job_id, event),
            )
        except InvalidSpec as err:  # passed the check before bidding, yet cannot run: say so
            self.log.warning(
                "job %s cannot be run (%s); reporting it",
                job_id[:12],
                err,
                extra={"event": "job.invalid_spec", "job_id": job_id},
            )
            self.client.report_invalid_spec(job_id)
            self._record(job_id, JobState.FAILED, outcome="invalid_spec")
            return
        store = CheckpointStore.open(self.run_dir(job_id))
        manifest = store.manifest
        commitment = Commitment(
            JobId(bytes.fromhex(job_id)),
            Root(bytes.fromhex(manifest["trajectory_root"])),
            len(store.entries()),
            Root(bytes.fromhex(manifest["final_model_root"])),
        )
        entries = [(e.step, e.state_root) for e in store.entries()]
        self.client.commit(
            job_id,
            commitment.to_json(),
            sign_commitment(self.client.key, commitment),
            entries[0][1],
            compute_trajectory_proof(entries, 0),
            losses=read_reported_losses(self.run_dir(job_id)),
        )
        self._record(job_id, "committed")

    def _world_size_for(self, spec: JobSpec) -> int:
        """The most ranks up to --world-size that give this job's bits (docs/parallel.md);
        red-team behaviours hook the one-process loop, so they train on one rank."""
        if not self.behaviour.honest:
            return 1
        return compute_usable_world_size(spec, self.config.world_size)

    def _on_training_progress(self, job_id: str, event: dict) -> None:
        if self.stopping:
            raise DaemonStopping()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.config.heartbeat_s:
            self.client.heartbeat(job_id)
            self._last_heartbeat = now
        if self.metrics:
            self.metrics.observe_progress(job_id, event.get("step"))
        self.state.data["jobs"][job_id]["progress"] = {
            "step": event.get("step"),
            "steps": event.get("steps"),
            "loss": event.get("loss"),
        }

    def _upload_owed_checkpoints(self, job_id: str) -> None:
        """What the coordinator needs now (`protocol.retention`), each checkpoint once: the
        indices uploaded are remembered, so a multi-gigabyte file is never sent twice."""
        store = CheckpointStore.open(self.run_dir(job_id))
        entries = [(e.step, e.state_root) for e in store.entries()]
        record = self.state.data["jobs"][job_id]
        assignments = [(a.segment, a.state) for a in self.client.get_job_assignments(job_id)]
        owed = compute_wanted_checkpoints(len(entries), assignments) - set(
            record.get("uploaded", [])
        )
        for index in sorted(owed):
            started, size = time.monotonic(), store.checkpoint_path(index).stat().st_size
            try:
                self.client.upload_checkpoint_file(  # streamed from disk, resumable
                    job_id,
                    index,
                    entries[index][0],
                    store.checkpoint_path(index),
                    compute_trajectory_proof(entries, index),
                    sha256=store.get_file_sha256(index),  # hashed when written
                )
            except CoordinatorError as err:
                if err.problem_code not in UPLOAD_NOT_NOW:
                    raise
                continue
            seconds = time.monotonic() - started
            record["uploaded"] = sorted({*record.get("uploaded", []), index})
            self.state.save()
            self.log.info(
                "uploaded checkpoint %d of job %s (%d bytes in %.2f s)",
                index,
                job_id[:12],
                size,
                seconds,
                extra={
                    "event": "checkpoint.uploaded",
                    "job_id": job_id,
                    "index": index,
                    "bytes": size,
                    "seconds": round(seconds, 3),
                },
            )
