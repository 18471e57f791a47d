"""`veritrain audit` rechecks every draw from the public log alone.

For each job: the award published H(beacon); the commitment revealed the beacon, and the seed
must be H(tag ‖ beacon ‖ commitment bytes); its segments and verifiers must be what
`protocol.sampling` draws from that seed, given the verifiers registered for the job's profile
and their standing stakes at that point of the log (replayed from the postings), each at least
the bond the job fixed at submission. A verifier
that missed a move is replaced by the draw from the replacement seed over the same pool (less
the missed verifier and those already holding the segment); after a missed reveal the segment
is drawn too, among those neither sampled nor with a public end checkpoint. A forced error's
jackpot must be paid exactly where the seed forces one.
"""

from dataclasses import dataclass, field

from protocol.economics import compute_forced_error_jackpot
from protocol.sampling import (
    compute_beacon_commitment,
    compute_eligible_verifiers,
    compute_replacement_seed,
    compute_secret_segment,
    compute_segment_choice,
    compute_selection_seed,
    compute_verifier_choice,
    is_forced_error,
)
from protocol.trajectory import Commitment


@dataclass
class _Job:
    submitter: str
    profile: str
    num_verifiers: int
    num_segments: int
    num_checkpoints: int
    verifier_bond: int = 0
    verifier_fee: int = 0
    forced_error_ppm: int = 0
    state_bytes: int = 0  # 0: a job from before sizes were logged, drawn without a bound
    audits_final_segment: bool = False  # its final state carries evaluation metrics
    solver: str = ""
    beacon_commitment: str = ""
    seed: bytes = b""
    holders: dict[int, set[str]] = field(default_factory=dict)  # segment → verifiers
    uploaded: set[int] = field(default_factory=set)  # checkpoint indices made public
    volunteers: set[int] = field(default_factory=set)  # assignment ids opened by a challenge


@dataclass
class DrawAuditor:
    problems: list[str] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)
    capacities: dict[str, int | None] = field(default_factory=dict)  # declared max state bytes
    jobs: dict[str, _Job] = field(default_factory=dict)
    draws_checked: int = 0

    def observe(self, entry: dict, balances: dict[str, int]) -> None:
        """Check `entry` against the draws it records; `balances` are those before its postings."""
        kind, data = entry.get("kind"), entry.get("data") or {}
        handler = {
            "verifier.registered": self._registered,
            "job.submitted": self._submitted,
            "job.awarded": self._awarded,
            "job.committed": self._committed,
            "verification.timed_out": self._timed_out,
            "checkpoint.uploaded": self._uploaded,
            "verification.challenged": self._challenged,
            "verification.agreed": self._agreed,
        }.get(kind)
        if handler is not None:
            try:
                handler(data, balances, f"entry {entry.get('index')} ({kind})")
            except (KeyError, TypeError, ValueError) as err:
                self.problems.append(f"entry {entry.get('index')} ({kind}): malformed ({err})")

    def _registered(self, data: dict, _balances: dict, _where: str) -> None:
        self.profiles[data["verifier"]] = list(data["profiles"])
        self.capacities[data["verifier"]] = data.get("max_state_bytes")

    def _submitted(self, data: dict, _balances: dict, _where: str) -> None:
        self.jobs[data["job_id"]] = _Job(
            data["submitter"],
            data["profile"],
            data["num_verifiers"],
            data["num_segments"],
            data["num_checkpoints"],
            data.get("verifier_bond", 0),
            data.get("verifier_fee", 0),
            data.get("forced_error_ppm", 0),
            data.get("state_bytes") or 0,
            audits_final_segment=bool(data.get("audits_final_segment")),
        )

    def _awarded(self, data: dict, _balances: dict, _where: str) -> None:
        job = self.jobs[data["job_id"]]
        job.solver, job.beacon_commitment = data["solver"], data["beacon_commitment"]

    def _pool(self, job: _Job, balances: dict[str, int]) -> list[tuple[str, int]]:
        candidates = [
            (key, balances.get(f"stake:{key}:", 0), labels)
            for key, labels in sorted(self.profiles.items())
        ]
        return compute_eligible_verifiers(
            candidates,
            job.profile,
            (job.solver, job.submitter),
            job.verifier_bond,
            job.state_bytes,
            self.capacities,
        )

    def _committed(self, data: dict, balances: dict, where: str) -> None:
        job = self.jobs[data["job_id"]]
        beacon = bytes.fromhex(data["beacon"])
        if compute_beacon_commitment(beacon).hex() != job.beacon_commitment:
            self.problems.append(f"{where}: the beacon does not open the award's commitment")
        commitment = Commitment.from_json(data)
        job.seed = compute_selection_seed(beacon, commitment.encode())
        if job.seed.hex() != data["seed"]:
            self.problems.append(f"{where}: the seed is not H(beacon ‖ commitment)")
        segments = compute_segment_choice(
            job.seed, job.num_checkpoints - 1, job.num_segments, job.audits_final_segment
        )
        verifiers = compute_verifier_choice(job.seed, self._pool(job, balances), job.num_verifiers)
        if segments != data["segments"] or verifiers != data["verifiers"]:
            self.problems.append(f"{where}: the drawn segments or verifiers differ from the seed's")
        job.holders = {segment: set(verifiers) for segment in segments}
        self.draws_checked += 1

    def _challenged(self, data: dict, _balances: dict, _where: str) -> None:
        self.jobs[data["job_id"]].volunteers.add(data["assignment"])

    def _agreed(self, data: dict, balances: dict, where: str) -> None:
        """A forced error's jackpot: exactly the drawn assignments the seed forces, as much as
        the rule gives and the burned pool holds."""
        job, assignment = self.jobs[data["job_id"]], data["assignment"]
        expected = 0
        if assignment not in job.volunteers and is_forced_error(
            job.seed, assignment, job.forced_error_ppm
        ):
            jackpot = compute_forced_error_jackpot(job.verifier_fee, job.forced_error_ppm)
            expected = min(jackpot, balances.get("burn::", 0))
        if data.get("jackpot", 0) != expected:
            self.problems.append(f"{where}: the jackpot is not what the forced-error rule pays")

    def _uploaded(self, data: dict, _balances: dict, _where: str) -> None:
        self.jobs[data["job_id"]].uploaded.add(data["index"])

    def _timed_out(self, data: dict, balances: dict, where: str) -> None:
        job = self.jobs[data["job_id"]]
        seed = compute_replacement_seed(job.seed, data["assignment"])
        if data["missed"] == "assigned":
            segment = data["segment"]
        else:
            seen = set(job.holders) | {i - 1 for i in job.uploaded if i > 0}
            segment = compute_secret_segment(seed, job.num_checkpoints - 1, seen)
        drawn = [data["replaced_by"]] if data.get("replaced_by") is not None else []
        expected: list[str] = []
        if segment is not None:
            taken = job.holders.get(segment, set()) | {data["verifier"]}
            pool = [(k, w) for k, w in self._pool(job, balances) if k not in taken]
            expected = compute_verifier_choice(seed, pool, 1)
        if expected != drawn or (drawn and data.get("replacement_segment") != segment):
            self.problems.append(f"{where}: the replacement is not the seed's draw")
        if drawn:
            job.holders.setdefault(segment, set()).update(drawn)
        self.draws_checked += 1
