"""What a MockTransport coordinator answers about a job, for daemon tests."""

PROFILE = "pinned:torch-2.13.0:float32:t1:avx2"


def job_view_json(job_id: str, row: int = 1, spec: dict | None = None) -> dict:
    """A job open for bids, as GET /v1/jobs lists it (with `spec`, as GET /v1/jobs/{id})."""
    view = {
        "id": row,
        "job_id": job_id,
        "submitter": "cd" * 32,
        "state": "bidding",
        "profile": PROFILE,
        "bounty": 1000,
        "min_stake": 10,
        "verifier_fee": 0,
        "num_verifiers": 0,
        "num_segments": 1,
        "num_checkpoints": 2,
        "created_at": 0.0,
        "deadline": 60.0,
    }
    return {**view, "spec": spec} if spec is not None else view
