"""Hypothesis strategies for dispute games (needs the `hypothesis` package: the `testing` extra).

Compose them as you like; `game_cases` draws whole cases and `played_games` plays them:

    @given(played_games(solvers=["perturb-step", "my_pkg.cheats:late_flip"]))
    def test_my_cheat_is_caught(result):
        assert_game_invariants(result)
"""

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from protocol import dispute
from protocol.behaviours import SOLVER_BEHAVIOURS, VERIFIER_BEHAVIOURS
from protocol.dispute import SOLVER, VERIFIER, compute_dissection_points
from protocol.standin import Divergence
from protocol.testing.games import WRONG_REPLAY, GameCase, load_behaviour, play_case

DIVERGENCE_KINDS = ("one-step", "range", "optimizer-only", "last-step")
ARITIES = (2, 3, 4, 8)


def segments(max_start: int = 10**6, max_length: int = 10**6) -> st.SearchStrategy:
    """(start, length) of a disputed segment (start, start + length]."""
    return st.tuples(st.integers(0, max_start), st.integers(1, max_length))


def chunk_counts(max_chunks: int = 64) -> st.SearchStrategy[int]:
    return st.integers(1, max_chunks)


def arities(choices: Sequence[int] = ARITIES) -> st.SearchStrategy[int]:
    """k of the k-ary step dissection."""
    return st.sampled_from(tuple(choices))


@st.composite
def divergences(
    draw, start: int, length: int, chunks: int, kinds: Sequence[str] = DIVERGENCE_KINDS
) -> Divergence:
    """Where a wrong trajectory departs inside (start, start + length]:

    - "one-step": one chunk goes wrong at one step, and every chunk after it (errors spread);
    - "range": every chunk is wrong from one step through another, then right again;
    - "optimizer-only": only the upper chunks (the optimizer slots' part of a state) go wrong;
    - "last-step": only the segment's final step is wrong.
    """
    end = start + length
    kind = draw(st.sampled_from(tuple(kinds)))
    step = draw(st.integers(start + 1, end))
    chunk = draw(st.integers(0, chunks - 1))
    if kind == "one-step":
        return Divergence(step, None, (chunk, chunk + 1))
    if kind == "range":
        last = draw(st.one_of(st.none(), st.integers(step, end)))
        return Divergence(step, last)
    if kind == "optimizer-only":
        return Divergence(step, None, (chunk, chunks), (chunk, chunks))
    return Divergence(end, None, draw(st.sampled_from([None, (chunk, chunk + 1)])))


def behaviours(role: str, names: Sequence[str] | None = None) -> st.SearchStrategy[Any]:
    """Behaviours of `role` by name: built-in ones, "wrong-replay" (a verifier whose replay goes
    wrong and who plays it out), or any "package.module:attribute"; default: every built-in."""
    if names is None:
        builtin = SOLVER_BEHAVIOURS if role == SOLVER else [*VERIFIER_BEHAVIOURS, WRONG_REPLAY]
        return st.sampled_from(builtin)
    return st.sampled_from([load_behaviour(name, role) for name in names])


@st.composite
def game_cases(
    draw,
    solvers: Sequence[str] | None = None,
    verifiers: Sequence[str] | None = None,
    arity_choices: Sequence[int] = ARITIES,
    max_length: int = 10**6,
    max_chunks: int = 64,
    kinds: Sequence[str] = DIVERGENCE_KINDS,
    equivocation_across_games: bool = True,
    own_divergences: bool = False,
    segments_per_job: int = 20,
) -> GameCase:
    """A whole case: segment, state size, arity, both behaviours, where each dishonest trajectory
    departs, and (sometimes, for a dishonest solver) roots it bound in another game of the job.
    With `own_divergences` the behaviours' own `divergence` decides where they go wrong, on a
    drawn segment of a job of `segments_per_job` segments (cases where it is honest play no
    game); otherwise the divergence is drawn from `kinds`."""
    start, length = draw(segments(max_length=max_length))
    segment = draw(st.integers(0, segments_per_job - 1))
    if own_divergences:  # a job's segments lie end to end from step 0, as behaviours expect
        start = segment * length
    chunks = draw(chunk_counts(max_chunks))
    solver = draw(behaviours(SOLVER, solvers))
    verifier = draw(behaviours(VERIFIER, verifiers))
    arity = draw(arities(arity_choices))
    bound: tuple[tuple[int, bytes], ...] = ()
    if equivocation_across_games and not solver.honest and draw(st.integers(0, 9)) == 0:
        points = compute_dissection_points(start, start + length, arity)
        bound = tuple((p, draw(st.binary(min_size=32, max_size=32))) for p in points)
    drawn = None if own_divergences else divergences(start, length, chunks, kinds)
    return GameCase(
        start=start,
        length=length,
        chunks=chunks,
        arity=arity,
        solver=solver,
        verifier=verifier,
        seed=draw(st.binary(min_size=8, max_size=8)),
        solver_divergence=None if drawn is None else draw(drawn),
        verifier_divergence=None if drawn is None else draw(drawn),
        bound_roots=bound,
        segment=segment,
    )


def played_games(rules: ModuleType = dispute, **case_options: Any) -> st.SearchStrategy:
    """`game_cases(**case_options)` played to the end under `rules`; cases where the parties
    agree (no game is opened) are skipped, so every example is a played game."""
    return (
        game_cases(**case_options)
        .map(lambda case: play_case(case, rules))
        .filter(lambda result: result is not None)
    )
