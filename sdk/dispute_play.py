"""What a daemon does about its open disputes, each loop: replay the disputed segment once into a
trace (in a worker under the job's profile), then answer every move from it before the deadline.

Crash-safe by construction: the trace is written atomically and reused after a restart, and the
game itself lives on the coordinator, so a restarted daemon reads where the game stands and goes on.
"""

from pathlib import Path

from protocol.behaviours import load_behaviour
from protocol.dispute import SOLVER, VERIFIER, Game
from protocol.spec import compute_checkpoint_steps, parse_job_spec
from protocol.standin import Player, TraceTrajectory
from protocol.wire import DisputeStatus
from sdk.client import CoordinatorClient
from sdk.disputes import get_game, play_until_idle
from sdk.store import CheckpointStore
from sdk.trace import get_state_path, load_trace
from sdk.worker import run_worker

TRACE_TIMEOUT_S = 3600


def _trace(
    trace_dir: Path,
    spec_json: dict,
    start_path: Path,
    start_root: str,
    to_step: int,
    file_paths: list[str],
    behaviour: str | None,
) -> TraceTrajectory:
    steps = load_trace(trace_dir)
    if steps is None:
        request = {
            "command": "trace",
            "spec": spec_json,
            "start_state_path": str(start_path),
            "start_root": start_root,
            "to_step": to_step,
            "trace_dir": str(trace_dir),
            "file_paths": file_paths,
            "behaviour": behaviour,
        }
        run_worker(request, parse_job_spec(spec_json).profile, timeout=TRACE_TIMEOUT_S)
        steps = load_trace(trace_dir)
    return TraceTrajectory(
        {step: [bytes.fromhex(h) for h in entry["chunks"]] for step, entry in steps.items()}
    )


def _segment_bounds(game: Game) -> tuple[int, int]:
    """(start step, end step) of the disputed segment: every step the verifier claimed lies in it."""
    return min(game.verifier_roots), max(game.verifier_roots)


def process_solver_disputes(
    client: CoordinatorClient, jobs_dir: Path, work_dir: Path, behaviour_name: str | None = None
) -> int:
    """Play every open dispute against this solver; returns how many it looked at."""
    behaviour = load_behaviour(behaviour_name or "honest", "solver")
    views = [
        v
        for v in client.list_disputes(status=DisputeStatus.OPEN)
        if get_game(v).solver_key == client.public_key
    ]
    for view in views:
        game = get_game(view)
        store = CheckpointStore.open(jobs_dir / view.job_id)
        start, end = _segment_bounds(game)
        trace_dir = get_trace_dir(work_dir, view.job_id, view.segment)
        trace = _trace(
            trace_dir,
            store.manifest["spec"],
            store.checkpoint_path(view.segment),
            game.roots[start],
            end,
            [str(path) for path in store.file_paths()],
            None if behaviour.honest else behaviour.name,
        )
        play_until_idle(
            client,
            view.id,
            Player(SOLVER, client.key, trace, behaviour.policy),
            lambda step, d=trace_dir: get_state_path(d, step),
        )
    return len(views)


def process_verifier_disputes(
    client: CoordinatorClient, work_dir: Path, behaviour_name: str | None = None
) -> int:
    """Play every open dispute this verifier opened, from its own replay of the segment."""
    behaviour = load_behaviour(behaviour_name or "honest", "verifier")
    views = [
        v
        for v in client.list_disputes(status=DisputeStatus.OPEN)
        if get_game(v).verifier_key == client.public_key
    ]
    for view in views:
        game = get_game(view)
        trace = run_segment_trace(
            client, work_dir, view.job_id, view.segment, game.roots[min(game.verifier_roots)]
        )
        play_until_idle(client, view.id, Player(VERIFIER, client.key, trace, behaviour.policy))
    return len(views)


def get_trace_dir(work_dir: Path, job_id: str, segment: int) -> Path:
    return work_dir / f"{job_id}-{segment}"


def run_segment_trace(
    client: CoordinatorClient, work_dir: Path, job_id: str, segment: int, start_root: str
) -> TraceTrajectory:
    """A verifier's honest replay of segment i → i + 1 from checkpoint i on the coordinator
    (checked against `start_root` by the worker), cached in `work_dir`."""
    trace_dir = get_trace_dir(work_dir, job_id, segment)
    trace_dir.mkdir(parents=True, exist_ok=True)
    spec_json = client.get_job(job_id).spec
    start_path = trace_dir / "start.safetensors"
    if not start_path.exists():
        client.download_checkpoint_to(job_id, segment, start_path)  # streamed, resumable
    end_step = compute_checkpoint_steps(parse_job_spec(spec_json))[segment + 1]
    return _trace(
        trace_dir,
        spec_json,
        start_path,
        start_root,
        end_step,
        client.download_job_files(parse_job_spec(spec_json), work_dir / "files"),
        None,
    )
