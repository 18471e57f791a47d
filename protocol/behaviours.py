"""Honest and dishonest strategies for solvers and verifiers, for red-teaming and simulation.

A behaviour is any object with these attributes (write your own and load it with
`load_behaviour("package.module:attribute", role)`):

- `name: str`, `role: "solver" | "verifier"`, `honest: bool`, `description: str`;
- `divergence(segment_start, segment_end, segment_index) -> (first_bad_step, chunk) | None`:
  where the trajectory it computes first departs from the true one inside a segment — `chunk` is
  the first differing state chunk, or None for "every chunk" (the stand-in program and the
  simulator use this; a verifier's divergence describes the roots it *claims*);
- `transform_step(program, before, after, step) -> state`: applied by a solver's worker after
  every real training step (honest: return `after`), so the same cheat runs on real torch states;
- `policy: str`: how it plays a dispute — "follow" (answer from its own trajectory), "equivocate"
  (contradict roots it bound itself to), "fake-root" (its committed root has no state behind it),
  "no-show" (never moves);
- `saved_fraction: float` (share of a cheated segment's compute it skips, for the economics);
- `claim: str` (verifiers): the root it commits to — "replay" (its replay's), "start-root" (the
  segment's start root: no replay), "guess" (random: the solver's root is still secret),
  "made-up" (replays, then claims a random root).
"""

import importlib
from dataclasses import dataclass
from typing import Any

from protocol.errors import InvalidInput

PERTURB_STEP = 7  # the step whose result `perturb-step` alters (inside every segment that has it)
PERTURB_SIZE = 1e-3


@dataclass(frozen=True)
class Behaviour:
    name: str
    role: str
    honest: bool
    description: str
    policy: str = "follow"
    saved_fraction: float = 0.0
    claim: str = "replay"
    # where a cheated segment first goes wrong: `offset` steps into it, or only at the absolute
    # step `at_step`; `chunk` as in `divergence`. Neither set: honest.
    offset: int | None = None
    at_step: int | None = None
    chunk: int | None = None
    cheats_on: str = "all"  # "all" | "odd" | "after-first" (every segment but segment 0)

    def divergence(
        self, segment_start: int, segment_end: int, segment_index: int
    ) -> tuple[int, int | None] | None:
        if self.cheats_on == "odd" and segment_index % 2 == 0:
            return None
        if self.cheats_on == "after-first" and segment_index == 0:
            return None
        if self.at_step is not None:
            return (
                (self.at_step, self.chunk) if segment_start < self.at_step <= segment_end else None
            )
        if self.offset is None:
            return None
        return min(segment_end, segment_start + self.offset), self.chunk

    def transform_step(self, program: Any, before: Any, after: Any, step: int) -> Any:
        return TRANSFORMS.get(self.name, _identity)(program, before, after, step)


def _identity(program, before, after, step):
    return after


def _perturb(program, before, after, step):
    if step != PERTURB_STEP + 1:
        return after
    name = min(k for k in after if k.startswith("param/"))
    return {**after, name: after[name] + PERTURB_SIZE}


def _skip(program, before, after, step):
    """Copy the state forward (only the step counter moves): no compute spent."""
    return {**before, "step": after["step"]}


def _lower_precision(program, before, after, step):
    import torch

    return {
        k: (v.to(torch.bfloat16).to(v.dtype) if v.is_floating_point() else v)
        for k, v in after.items()
    }


def _interpolate(program, before, after, step):
    """Proof-of-Learning spoof: move linearly from the start towards a target model."""
    target = program.initial_state()
    weight = 1.0 / max(1, program.spec.steps - step + 1)
    return {
        k: (v + weight * (target[k] - v) if v.is_floating_point() else after[k])
        for k, v in before.items()
    }


def _skip_odd_segments(program, before, after, step):
    segment = (step - 1) // program.spec.checkpoint_interval
    return _skip(program, before, after, step) if segment % 2 else after


def _skip_after_first_segment(program, before, after, step):
    """Segment 0 trained honestly (the one an adaptive solver would steer its audit to), every
    later step copied forward."""
    segment = (step - 1) // program.spec.checkpoint_interval
    return _skip(program, before, after, step) if segment else after


def _wrong_data_order(program, before, after, step):
    """Trains on the batch of another step (its own order), not the protocol's."""
    shifted = {**before, "step": before["step"] + 1_000_003}
    return {**program.step(shifted), "step": after["step"]}


TRANSFORMS = {
    "perturb-step": _perturb,
    "skip-steps": _skip,
    "lower-precision": _lower_precision,
    "interpolate": _interpolate,
    "honest-on-some-segments": _skip_odd_segments,
    "honest-first-segment": _skip_after_first_segment,
    "wrong-data-order": _wrong_data_order,
    "equivocate": _skip,
    "no-show": _skip,
}

SOLVER_BEHAVIOURS = [
    Behaviour("honest", "solver", True, "trains every step as specified"),
    Behaviour(
        "skip-steps",
        "solver",
        False,
        "copies the state instead of training",
        saved_fraction=1.0,
        offset=1,
    ),
    Behaviour(
        "perturb-step",
        "solver",
        False,
        f"adds {PERTURB_SIZE} to one tensor after step {PERTURB_STEP}",
        at_step=PERTURB_STEP + 1,
        chunk=0,
    ),
    Behaviour(
        "interpolate",
        "solver",
        False,
        "interpolates between init and a target model (PoL spoof)",
        saved_fraction=0.95,
        offset=1,
    ),
    Behaviour(
        "honest-on-some-segments",
        "solver",
        False,
        "trains only the even segments",
        saved_fraction=1.0,
        offset=1,
        cheats_on="odd",
    ),
    Behaviour(
        "honest-first-segment",
        "solver",
        False,
        "trains segment 0 only, copies the state through every later segment",
        saved_fraction=1.0,
        offset=1,
        cheats_on="after-first",
    ),
    Behaviour("wrong-data-order", "solver", False, "uses its own batch order", offset=1),
    Behaviour(
        "lower-precision", "solver", False, "computes in bfloat16", saved_fraction=0.5, offset=1
    ),
    Behaviour(
        "equivocate",
        "solver",
        False,
        "cheats, then answers the bisection inconsistently",
        policy="equivocate",
        saved_fraction=1.0,
        offset=1,
    ),
    Behaviour(
        "fake-root",
        "solver",
        False,
        "commits a root with no state behind it",
        policy="fake-root",
        saved_fraction=1.0,
        offset=10**18,
    ),
    Behaviour(
        "no-show",
        "solver",
        False,
        "never answers a dispute",
        policy="no-show",
        saved_fraction=1.0,
        offset=1,
    ),
]
VERIFIER_BEHAVIOURS = [
    Behaviour("honest", "verifier", True, "replays every sampled segment"),
    Behaviour(
        "lazy-approve",
        "verifier",
        False,
        "approves without replaying",
        saved_fraction=1.0,
        claim="start-root",
    ),
    Behaviour(
        "copy-solver",
        "verifier",
        False,
        "tries to copy the solver's root (commit-reveal forces a guess)",
        saved_fraction=1.0,
        claim="guess",
    ),
    Behaviour(
        "frivolous-challenge",
        "verifier",
        False,
        "challenges honest work with a made-up root",
        claim="made-up",
    ),
    Behaviour("no-show", "verifier", False, "never answers", policy="no-show", saved_fraction=1.0),
]
BUILTIN = {(b.role, b.name): b for b in SOLVER_BEHAVIOURS + VERIFIER_BEHAVIOURS}


def load_behaviour(name_or_path: str, role: str) -> Any:
    """A built-in by name, or any object at 'package.module:attribute'."""
    if (role, name_or_path) in BUILTIN:
        return BUILTIN[(role, name_or_path)]
    if ":" not in name_or_path:
        known = ", ".join(sorted(n for r, n in BUILTIN if r == role))
        raise InvalidInput(
            f"unknown {role} behaviour '{name_or_path}' (built-in: {known}; or module:attribute)",
            "behaviour",
        )
    module_name, _, attribute = name_or_path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise InvalidInput(f"cannot load {name_or_path}: {err}", "behaviour") from err
    missing = [
        a
        for a in ("name", "role", "honest", "divergence", "transform_step", "policy")
        if not hasattr(found, a)
    ]
    if missing or found.role != role:
        raise InvalidInput(
            f"{name_or_path} is not a {role} behaviour (missing {missing})", "behaviour"
        )
    return found
