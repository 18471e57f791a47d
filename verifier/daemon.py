"""The verifier daemon: register, replay assigned segments, commit then reveal, play disputes.

Every `poll_s`: register its profiles and stake once; for each assignment, do what its state asks
— `assigned`: replay segment i → i + 1 from checkpoint i (checked against its root in the
worker), persist (root, salt) *before* committing H(root ‖ salt), commit; `revealable`: reveal.
Then play its open disputes from the same replay. State: `<store>/state.json` (atomic), replays
under `<store>/disputes/`; a restart after kill -9 re-reads both and carries on. SIGTERM stops it
between two calls.
"""

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from protocol.behaviours import load_behaviour
from protocol.errors import InvalidSpec
from protocol.spec import parse_job_spec
from protocol.training import check_runnable_spec
from protocol.wire import AssignmentState, ProblemCode, compute_verification_commit
from sdk.client import CoordinatorClient, CoordinatorError
from sdk.daemon import Daemon
from sdk.dispute_play import run_segment_trace
from sdk.durable import DurableState
from sdk.responses import AssignmentView
from sdk.worker import get_runnable_profiles
from verifier import disputes

# Claims a behaviour makes without replaying (nothing to build, so nothing to refuse).
CLAIMS_WITHOUT_REPLAY = frozenset({"start-root", "guess"})
# The assignment moved on between the listing and the move (its deadline passed, a replacement
# was drawn): nothing to do for it; the other assignments still get their moves this round.
ASSIGNMENT_MOVED_ON = frozenset({ProblemCode.INVALID_STATE})


@dataclass
class VerifierConfig:
    stake: int
    profiles: list[str] = field(default_factory=get_runnable_profiles)
    behaviour: str = "honest"
    poll_s: float = 1.0


class VerifierDaemon(Daemon):
    log = logging.getLogger("veritrain.verifier")

    def __init__(self, client: CoordinatorClient, store: Path, config: VerifierConfig):
        self.client, self.store, self.config = client, store, config
        self.behaviour = load_behaviour(config.behaviour, "verifier")
        self.state = DurableState(
            store / "state.json", {"registered": False, "assignments": {}, "refused": {}}
        )
        self.state.data.setdefault("refused", {})  # a state file from before refusals were kept
        super().__init__()
        self.poll_s = config.poll_s

    def step(self) -> None:
        if not self.state.data["registered"]:
            self.client.register_verifier(self.config.profiles, self.config.stake)
            self.state.data["registered"] = True
            self.state.save()
        for assignment in self.client.get_assignments():
            if self.stopping:
                return
            self._advance_or_skip(assignment)
        disputes.process_open_disputes(self)

    def _advance_or_skip(self, assignment: AssignmentView) -> None:
        try:
            self._advance(assignment)
        except CoordinatorError as err:
            if err.problem_code not in ASSIGNMENT_MOVED_ON:
                raise
            self.log.info("assignment %d moved on: %s", assignment.id, err)

    def _advance(self, assignment: AssignmentView) -> None:
        key = str(assignment.id)
        record = self.state.data["assignments"].get(key)
        if key in self.state.data["refused"]:
            return  # a job it cannot run: refused once, not retried every round
        if assignment.state is AssignmentState.ASSIGNED and self.behaviour.policy != "no-show":
            if record is None and not self._can_replay(assignment):
                return
            if record is None:
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
        elif assignment.state is AssignmentState.REVEALABLE and record is not None:
            self.client.reveal_verification(
                assignment.id, bytes.fromhex(record["root"]), bytes.fromhex(record["salt"])
            )

    def _can_replay(self, assignment: AssignmentView) -> bool:
        """The job's spec builds into a training program within the limits (the validator the
        coordinator runs at submission); an assignment whose job does not is remembered as
        refused and never replayed."""
        if self.behaviour.claim in CLAIMS_WITHOUT_REPLAY:
            return True
        try:
            spec = parse_job_spec(self.client.get_job(assignment.job_id).spec)
            blob = (
                self.client.download_dataset(spec.dataset.sha256)
                if spec.dataset.kind == "safetensors"
                else None
            )
            check_runnable_spec(spec, blob)
        except InvalidSpec as err:
            self.log.warning("refusing assignment %d: cannot replay it (%s)", assignment.id, err)
            self.state.data["refused"][str(assignment.id)] = str(err)[:256]
            self.state.save()
            return False
        return True

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
