"""The solver daemon: bid, train, commit, serve checkpoints, defend disputes, get paid.

One loop, every `poll_s`: bid on open jobs it can run; for each job it bid on, do what the job's
state asks (train and commit once awarded, upload the checkpoints its verifiers need); play its
open disputes. Everything it must remember lives in `<store>/state.json` (atomic rewrites) and the
run directories `<store>/jobs/<job id>`, so after kill -9 it resumes training from the last
checkpoint and picks up every obligation; the coordinator keeps the rest. SIGTERM stops it
between two HTTP calls (training is abandoned at once and resumes on restart).
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocol.behaviours import load_behaviour
from protocol.spec import parse_job_spec
from protocol.trajectory import Commitment, compute_trajectory_proof, sign_commitment
from protocol.types import JobId, Root
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.daemon import Daemon, DaemonStopping
from sdk.durable import DurableState
from sdk.store import CheckpointStore
from sdk.worker import get_runnable_profiles, run_worker
from solver import disputes

FINAL_STATES = ("settled", "failed", "cancelled")



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


class SolverDaemon(Daemon):
    log = logging.getLogger("veritrain.solver")

    def __init__(self, client: CoordinatorClient, store: Path, config: SolverConfig):
        self.client, self.store, self.config = client, store, config
        self.behaviour = load_behaviour(config.behaviour, "solver")
        self.state = DurableState(store / "state.json", {"jobs": {}})
        super().__init__()
        self.poll_s = config.poll_s
        self._last_heartbeat = 0.0

    def step(self) -> None:
        self._bid_on_open_jobs()
        for job_id, record in list(self.state.data["jobs"].items()):
            if record["state"] not in FINAL_STATES:
                self._advance(job_id)
        disputes.process_open_disputes(self)

    # --- bidding ---------------------------------------------------------------------------
    def _active_jobs(self) -> int:
        return sum(r["state"] not in FINAL_STATES for r in self.state.data["jobs"].values())

    def _bid_on_open_jobs(self) -> None:
        for profile in self.config.profiles:
            for job in self.client.list_jobs(state="bidding", profile=profile):
                if self._active_jobs() >= self.config.max_jobs:
                    return
                if self._wants(job):
                    self._bid(job)

    def _wants(self, job: dict) -> bool:
        return (job["job_id"] not in self.state.data["jobs"] and job["submitter"] != self.client.public_key
                and job["min_stake"] <= self.config.stake
                and (self.config.only_jobs is None or job["job_id"] in self.config.only_jobs))

    def _bid(self, job: dict) -> None:
        try:
            self.client.bid(job["job_id"], self.config.price, self.config.stake, job["profile"])
        except CoordinatorError as err:
            if err.status == 422 or (err.status == 409 and "already" not in str(err)):
                self.log.info("not bidding on %s: %s", job["job_id"][:12], err)
                return
        self.state.data["jobs"][job["job_id"]] = {"state": "bidding"}
        self.state.save()

    # --- one job ---------------------------------------------------------------------------
    def _advance(self, job_id: str) -> None:
        job = self.client.get_job(job_id)
        if job["state"] != "bidding" and job["solver"] != self.client.public_key:
            self._record(job_id, "cancelled")  # lost the award (its stake came back)
        elif job["state"] in FINAL_STATES:
            self._record(job_id, job["state"], outcome=job.get("outcome"))
        elif job["state"] == "awarded":
            self._train_and_commit(job)
        elif job["state"] == "verifying":
            self._upload_owed_checkpoints(job_id)

    def _record(self, job_id: str, state: str, **extra) -> None:
        self.state.data["jobs"][job_id] = {**self.state.data["jobs"][job_id], "state": state, **extra}
        self.state.save()

    def run_dir(self, job_id: str) -> Path:
        return self.store / "jobs" / job_id

    def _train_and_commit(self, job: dict) -> None:
        spec_json = job["spec"]
        request = {"command": "train", "spec": spec_json, "dir": str(self.run_dir(job["job_id"])),
                   "behaviour": None if self.behaviour.honest else self.behaviour.name}
        self._record(job["job_id"], "training")
        run_worker(request, parse_job_spec(spec_json).profile,
                   on_progress=lambda event: self._on_training_progress(job["job_id"], event))
        store = CheckpointStore.open(self.run_dir(job["job_id"]))
        manifest = store.manifest
        commitment = Commitment(JobId(bytes.fromhex(job["job_id"])), Root(bytes.fromhex(manifest["trajectory_root"])),
                                len(store.entries()), Root(bytes.fromhex(manifest["final_model_root"])))
        self.client.commit(job["job_id"], commitment.to_json(), sign_commitment(self.client.key, commitment))
        self._record(job["job_id"], "committed")

    def _on_training_progress(self, job_id: str, event: dict) -> None:
        if self.stopping:
            raise DaemonStopping()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.config.heartbeat_s:
            self.client.heartbeat(job_id)
            self._last_heartbeat = now
        self.state.data["jobs"][job_id]["progress"] = {"step": event.get("step"), "steps": event.get("steps"),
                                                       "loss": event.get("loss")}

    def _upload_owed_checkpoints(self, job_id: str) -> None:
        store = CheckpointStore.open(self.run_dir(job_id))
        entries = [(e.step, e.state_root) for e in store.entries()]
        owed = set()
        for a in self.client.get_job_assignments(job_id):
            if a["state"] == "awaiting_start":
                owed.add(a["segment"])
            elif a["state"] == "committed":
                owed.add(a["segment"] + 1)
        for index in sorted(owed):
            try:
                self.client.upload_checkpoint(job_id, index, entries[index][0],
                                              store.checkpoint_path(index).read_bytes(),
                                              compute_trajectory_proof(entries, index))
            except CoordinatorError as err:
                if err.status != 409:  # 409: other verifiers of the segment have not committed yet
                    raise
