"""The verifier daemon: register, replay assigned segments, commit then reveal, play disputes.

Every `poll_s`: register its profiles and stake once; for each assignment, do what its state asks
— `assigned`: replay segment i → i + 1 from checkpoint i (checked against its root in the
worker), persist (root, salt) *before* committing H(root ‖ salt), commit; `revealable`: reveal.
Then play its open disputes from the same replay. State: `<store>/state.json` (atomic), replays
under `<store>/disputes/`; a restart after kill -9 re-reads both and carries on. SIGTERM stops it
between two calls.

Watch mode (`watch_budget` > 0 segments per hour): each step, while the last hour's challenges
leave budget, it challenges (`POST /v1/jobs/{id}/challenges`) a segment chosen uniformly among
those it does not hold yet of a verifying job of its profiles that it neither solves nor
submitted, after the spec validator accepts the job; the volunteer assignment is then replayed
like any other. Challenges made, and jobs it gave up on, are kept in the state file.
"""

import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocol.behaviours import load_behaviour
from protocol.errors import InvalidSpec
from protocol.spec import parse_job_spec
from protocol.state import compute_layout_bytes
from protocol.training import check_runnable_spec
from protocol.wire import (
    ACTIVE_ASSIGNMENT_STATES,
    AssignmentState,
    JobState,
    ProblemCode,
    compute_verification_commit,
)
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.daemon import Daemon, compute_default_max_state_bytes, describe_state_too_large
from sdk.dispute_play import run_segment_trace
from sdk.durable import DurableState
from sdk.responses import AssignmentView, JobView
from sdk.store import read_job_files
from sdk.worker import get_runnable_profiles
from verifier import disputes

# Claims a behaviour makes without replaying (nothing to build, so nothing to refuse).
CLAIMS_WITHOUT_REPLAY = frozenset({"start-root", "guess"})
# The assignment moved on between the listing and the move (its deadline passed, a replacement
# was drawn): nothing to do for it; the other assignments still get their moves this round.
ASSIGNMENT_MOVED_ON = frozenset({ProblemCode.INVALID_STATE})
# A challenge the coordinator refused for the job as a whole (its window closed, it holds the
# most challenges it may): that job is not watched again. A refusal of the key itself (its
# standing stake fell below the bond: forbidden) ends this step's watch.
CHALLENGE_CLOSED = frozenset({ProblemCode.INVALID_STATE, ProblemCode.QUOTA_EXCEEDED})
WATCH_PERIOD_S = 3600.0
WATCH_PAGES = 10  # jobs listed per profile and step: at most this many pages of 100


@dataclass
class VerifierConfig:
    stake: int
    profiles: list[str] = field(default_factory=get_runnable_profiles)
    behaviour: str = "honest"
    poll_s: float = 1.0
    watch_budget: int = 0  # segments it may challenge per hour, on jobs of its choice; 0: off
    max_state_bytes: int = field(default_factory=compute_default_max_state_bytes)


class VerifierDaemon(Daemon):
    log = logging.getLogger("veritrain.verifier")

    def __init__(self, client: CoordinatorClient, store: Path, config: VerifierConfig):
        self.client, self.store, self.config = client, store, config
        self.behaviour = load_behaviour(config.behaviour, "verifier")
        self.state = DurableState(
            store / "state.json",
            {"registered": False, "assignments": {}, "refused": {}, "watch": {}},
        )
        self.state.data.setdefault("refused", {})  # a state file from before refusals were kept
        self.state.data.setdefault("watch", {})  # … or before watch mode
        self.rng = random.SystemRandom()
        self.clock = time.time
        super().__init__()
        self.poll_s = config.poll_s

    def step(self) -> None:
        if not self.state.data["registered"]:
            self.client.register_verifier(
                self.config.profiles, self.config.stake, self.config.max_state_bytes
            )
            self.state.data["registered"] = True
            self.state.save()
            self.log.info(
                "registered with stake %d for %s",
                self.config.stake,
                ", ".join(self.config.profiles),
                extra={"event": "verifier.registered", "stake": self.config.stake},
            )
        if self.config.watch_budget > 0:
            self._watch()
        assignments = self.client.get_assignments()
        self._held = {a.job_id for a in assignments if a.state in ACTIVE_ASSIGNMENT_STATES}
        for assignment in assignments:
            if self.stopping:
                return
            self._advance_or_skip(assignment)
        disputes.process_open_disputes(self)

    def jobs_held(self) -> int:
        """Jobs it holds an active assignment on (as of this round's listing)."""
        return len(getattr(self, "_held", ()))

    def _advance_or_skip(self, assignment: AssignmentView) -> None:
        try:
            self._advance(assignment)
        except CoordinatorError as err:
            if err.problem_code not in ASSIGNMENT_MOVED_ON:
                raise
            self.log.info(
                "assignment %d moved on: %s",
                assignment.id,
                err,
                extra={
                    "event": "assignment.moved_on",
                    "assignment_id": assignment.id,
                    "job_id": assignment.job_id,
                },
            )

    def _advance(self, assignment: AssignmentView) -> None:
        key = str(assignment.id)
        record = self.state.data["assignments"].get(key)
        if key in self.state.data["refused"]:
            return  # a job it cannot run: refused once, not retried every round
        if assignment.state is AssignmentState.ASSIGNED and self.behaviour.policy != "no-show":
            if record is None and not self._can_replay(assignment):
                return
            if record is None:
                if self.metrics:  # a replay asked for again: the last one did not finish
                    self.metrics.observe_worker_start(key)
                record = {
                    "root": self._compute_claim(assignment).hex(),
                    "salt": secrets.token_hex(16),
                }
                self.state.data["assignments"][key] = record
                self.state.save()  # before the commit: a restart must reveal what it committed
            commit = compute_verification_commit(
                bytes.fromhex(record["root"]), bytes.fromhex(record["salt"])
            )
            self.client.commit_verification(assignment.id, commit)
            self._log_move("committed to", "assignment.committed", assignment)
        elif assignment.state is AssignmentState.REVEALABLE and record is not None:
            self.client.reveal_verification(
                assignment.id, bytes.fromhex(record["root"]), bytes.fromhex(record["salt"])
            )
            self._log_move("revealed", "assignment.revealed", assignment)

    def _log_move(self, verb: str, event: str, assignment: AssignmentView) -> None:
        self.log.info(
            "%s assignment %d (segment %d of job %s)",
            verb,
            assignment.id,
            assignment.segment,
            assignment.job_id[:12],
            extra={
                "event": event,
                "assignment_id": assignment.id,
                "job_id": assignment.job_id,
                "segment": assignment.segment,
            },
        )

    def _can_replay(self, assignment: AssignmentView) -> bool:
        """The job's spec builds into a training program within the limits (the validator the
        coordinator runs at submission); an assignment whose job does not is remembered as
        refused and never replayed."""
        if self.behaviour.claim in CLAIMS_WITHOUT_REPLAY:
            return True
        fault = self._spec_fault(assignment.job_id)
        if fault is not None:
            self.log.warning(
                "refusing assignment %d: cannot replay it (%s)",
                assignment.id,
                fault,
                extra={
                    "event": "assignment.refused",
                    "assignment_id": assignment.id,
                    "job_id": assignment.job_id,
                },
            )
            self.state.data["refused"][str(assignment.id)] = fault
            self.state.save()
            return False
        return True

    def _spec_fault(self, job_id: str) -> str | None:
        """Why the job's spec cannot be replayed here: the submission validator's message, or a
        state beyond its declared memory (the draw never picks it for one; a challenge might)."""
        try:
            spec = parse_job_spec(self.client.get_job(job_id).spec)
            paths = self.client.download_job_files(spec, self.store / "disputes" / "files")
            program = check_runnable_spec(spec, read_job_files(paths))
        except InvalidSpec as err:
            return str(err)[:256]
        state_bytes = compute_layout_bytes(program.state_layout())
        return describe_state_too_large(state_bytes, self.config.max_state_bytes)

    # --- watch mode: the open challenge window ---------------------------------------------------

    def _watch(self) -> None:
        """Spend what the last hour left of `watch_budget` on segments of its own choice."""
        watch = self.state.data["watch"]
        now = self.clock()
        recent = [t for t in watch.get("times", []) if now - t < WATCH_PERIOD_S]
        budget = self.config.watch_budget - len(recent)
        if budget <= 0:
            return
        held: dict[str, set[int]] = {}
        for a in self.client.get_assignments():
            held.setdefault(a.job_id, set()).add(a.segment)
        listed = self._verifying_jobs()
        verifying = {job.job_id for job in listed}
        for kept in ("challenged", "skipped"):  # only jobs still verifying matter
            watch[kept] = {k: v for k, v in watch.get(kept, {}).items() if k in verifying}
        me, skipped = self.client.public_key, watch["skipped"]
        candidates = [job for job in listed if me not in (job.solver, job.submitter)]
        for job_id, segments in watch["challenged"].items():
            held.setdefault(job_id, set()).update(segments)
        runnable: set[str] = set()
        while budget > 0 and not self.stopping:
            free = {
                job.job_id: sorted(
                    set(range(job.num_checkpoints - 1)) - held.get(job.job_id, set())
                )
                for job in candidates
                if job.job_id not in skipped and job.job_id not in self.state.data["refused"]
            }
            open_jobs = sorted(job_id for job_id, segments in free.items() if segments)
            if not open_jobs:
                return
            job_id = self.rng.choice(open_jobs)
            if job_id not in runnable:
                fault = self._spec_fault(job_id)
                if fault is not None:
                    self.log.warning(
                        "not watching job %s: cannot replay it (%s)",
                        job_id,
                        fault,
                        extra={"event": "watch.refused", "job_id": job_id},
                    )
                    self.state.data["refused"][job_id] = fault
                    self.state.save()
                    continue
                runnable.add(job_id)
            segment = self.rng.choice(free[job_id])
            held.setdefault(job_id, set()).add(segment)
            try:
                self.client.challenge_segment(job_id, segment)
            except CoordinatorError as err:
                self.log.info(
                    "not challenging job %s: %s",
                    job_id,
                    err,
                    extra={
                        "event": "watch.declined",
                        "job_id": job_id,
                        "code": str(err.problem_code),
                    },
                )
                if err.problem_code == ProblemCode.FORBIDDEN:
                    return
                if err.problem_code in CHALLENGE_CLOSED:
                    skipped[job_id] = str(err)[:256]
                    self.state.save()
                elif err.problem_code != ProblemCode.ALREADY_EXISTS:
                    raise
                continue
            self.log.info(
                "challenged segment %d of job %s",
                segment,
                job_id,
                extra={"event": "watch.challenged", "job_id": job_id, "segment": segment},
            )
            watch.setdefault("challenged", {}).setdefault(job_id, []).append(segment)
            recent.append(now)
            watch["times"] = recent
            self.state.save()
            budget -= 1

    def _verifying_jobs(self) -> list[JobView]:
        jobs, seen = [], set()
        for profile in self.config.profiles:
            after = 0
            for _ in range(WATCH_PAGES):
                page = self.client.list_jobs(JobState.VERIFYING, profile, after=after)
                jobs += [job for job in page if job.job_id not in seen]
                seen.update(job.job_id for job in page)
                if len(page) < 100:
                    break
                after = page[-1].id
        return jobs

    def _compute_claim(self, assignment: AssignmentView) -> bytes:
        """The root it commits to: its replay's, unless its behaviour says otherwise."""
        job_id, segment = assignment.job_id, assignment.segment
        start_root = self.client.get_checkpoint_info(job_id, segment).state_root
        if self.behaviour.claim == "start-root":
            return bytes.fromhex(start_root)  # no replay: the only root it has
        if self.behaviour.claim == "guess":
            return secrets.token_bytes(32)  # commit-reveal: the solver's root is not public yet
        trace = run_segment_trace(self.client, self.store / "disputes", job_id, segment, start_root)
        root = trace.root(max(trace.chunks_by_step))
        return secrets.token_bytes(32) if self.behaviour.claim == "made-up" else root
