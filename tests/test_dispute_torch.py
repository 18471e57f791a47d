"""The dispute game on the real torch program: a solver that perturbs step 7 of a 20-step `mlp`
segment is pinned to step 7 and to the first chunk of the tensor it altered, and the referee —
recomputing one step — rules against it; an honest solver challenged frivolously wins."""

import pytest
from nacl.signing import SigningKey
from safetensors.torch import save

from protocol.behaviours import PERTURB_STEP, load_behaviour
from protocol.dispute import OVER, SOLVER, VERIFIER, compute_initial_game
from protocol.errors import CheckpointCorrupt
from protocol.merkle import root_from_leaf_hashes
from protocol.presets import example_job_spec_json
from protocol.referee import compute_referee_chunk
from protocol.spec import parse_job_spec
from protocol.standin import Player, TraceTrajectory, play_game
from protocol.state import compute_chunk_hashes, compute_chunk_layout, encode_state, get_step
from protocol.training import build_program

pytestmark = pytest.mark.slow
SOLVER_KEY, VERIFIER_KEY = SigningKey(b"S" * 32), SigningKey(b"V" * 32)


@pytest.fixture(scope="module")
def program():
    spec = example_job_spec_json("mlp", steps=20)
    spec["checkpoint_interval"] = 20
    return build_program(parse_job_spec(spec))


def train(program, behaviour):
    state = program.initial_state()
    states = {0: state}
    while get_step(state) < 20:
        after = program.step(state)
        state = behaviour.transform_step(program, state, after, get_step(after))
        states[get_step(state)] = state
    return states


def play(program, solver_states, verifier_states, agreed_states, verifier_trace=None):
    solver_trace = TraceTrajectory({s: compute_chunk_hashes(v) for s, v in solver_states.items()})
    verifier_trace = verifier_trace or TraceTrajectory(
        {s: compute_chunk_hashes(v) for s, v in verifier_states.items()}
    )
    num_chunks = len(solver_trace.chunk_hashes(0))
    game = compute_initial_game(
        game_id="cd" * 32,
        solver_key=bytes(SOLVER_KEY.verify_key).hex(),
        verifier_key=bytes(VERIFIER_KEY.verify_key).hex(),
        start_step=0,
        start_root=solver_trace.root(0).hex(),
        end_step=20,
        solver_root=solver_trace.root(20).hex(),
        verifier_root=verifier_trace.root(20).hex(),
        num_chunks=num_chunks,
        now=0,
        move_timeout=60,
    )
    referee = RefereeAtChunk(program, agreed_states)
    final = play_game(
        game,
        Player(SOLVER, SOLVER_KEY, solver_trace),
        Player(VERIFIER, VERIFIER_KEY, verifier_trace),
        referee,
    )
    return final, referee


class RefereeAtChunk:
    def __init__(self, program, agreed_states):
        self.program, self.agreed_states, self.steps_computed = program, agreed_states, 0

    def chunk_hashes(self, step):
        """Only the disputed chunk is ever read; compute it with one training step."""
        agreed = self.agreed_states[step - 1]
        root = root_from_leaf_hashes(compute_chunk_hashes(agreed))
        self.steps_computed += 1
        return _LazyChunks(
            lambda c: compute_referee_chunk(self.program, encode_state(agreed), root, c)
        )


class _LazyChunks:
    def __init__(self, compute):
        self.compute = compute

    def __getitem__(self, chunk):
        return self.compute(chunk)


def test_perturbed_step_7_is_pinned_to_its_step_and_tensor_chunk(program):
    honest = train(program, load_behaviour("honest", "solver"))
    cheat = train(program, load_behaviour("perturb-step", "solver"))
    final, referee = play(program, cheat, honest, honest)
    perturbed = min(k for k in honest[0] if k.startswith("param/"))
    first_chunk = next(c.index for c in compute_chunk_layout(honest[8]) if c.tensor == perturbed)
    assert (final.phase, final.lo, final.hi) == (OVER, PERTURB_STEP, PERTURB_STEP + 1)
    assert final.chunk == first_chunk
    assert final.winner == VERIFIER and "verifier's chunk" in final.reason
    assert referee.steps_computed == 1


def test_honest_solver_frivolously_challenged_wins(program):
    honest = train(program, load_behaviour("honest", "solver"))
    made_up = {s: compute_chunk_hashes(v) for s, v in honest.items()}
    made_up[20] = [bytes(32)] + made_up[20][1:]  # a made-up claim about the final state
    final, referee = play(program, honest, None, honest, TraceTrajectory(made_up))
    assert (final.phase, final.winner, final.lo, final.chunk) == (OVER, SOLVER, 19, 0)
    assert "solver's chunk" in final.reason and referee.steps_computed == 1


def test_referee_refuses_a_state_that_is_not_the_agreed_one(program):
    honest = train(program, load_behaviour("honest", "solver"))
    wrong_root = root_from_leaf_hashes(compute_chunk_hashes(honest[4]))
    with pytest.raises(CheckpointCorrupt, match="does not match the agreed root"):
        compute_referee_chunk(program, encode_state(honest[3]), wrong_root, 0)
    right_root = root_from_leaf_hashes(compute_chunk_hashes(honest[3]))
    with pytest.raises(CheckpointCorrupt, match="no chunk"):
        compute_referee_chunk(program, encode_state(honest[3]), right_root, 10**6)
    relabelled = save(
        dict(honest[3]), metadata={"format": "not-canonical"}
    )  # same tensors, other header
    with pytest.raises(CheckpointCorrupt, match="canonical"):
        compute_referee_chunk(program, relabelled, right_root, 0)


class FlatteringSolver:
    """Trains honestly, then commits a final state whose evaluation looks better than it is:
    a consistent lie (its roots and chunks all describe the flattering state)."""

    name, role, honest, policy = "flattering-metrics", "solver", False, "follow"

    def transform_step(self, program, before, after, step):
        if step != program.spec.steps:
            return after
        better = {"metric/eval_loss": after["metric/eval_loss"] * 0.5}
        better["metric/eval_accuracy"] = after["metric/eval_accuracy"] * 0 + 1.0
        return {**after, **better}


def test_a_solver_that_reports_a_better_evaluation_than_its_state_gives_loses():
    spec = example_job_spec_json("mlp", steps=20)
    spec.update(checkpoint_interval=20, evaluation={"examples": 64})
    evaluated = build_program(parse_job_spec(spec))
    honest = train(evaluated, load_behaviour("honest", "solver"))
    liar = train(evaluated, FlatteringSolver())
    assert float(liar[20]["metric/eval_loss"]) < float(honest[20]["metric/eval_loss"])
    final, referee = play(evaluated, liar, honest, honest)
    metric_chunks = {
        c.index for c in compute_chunk_layout(honest[20]) if c.tensor.startswith("metric/")
    }
    assert (final.phase, final.lo, final.hi, final.winner) == (OVER, 19, 20, VERIFIER)
    assert final.chunk in metric_chunks and "verifier's chunk" in final.reason
    assert referee.steps_computed == 1  # the referee's one step includes the evaluation
