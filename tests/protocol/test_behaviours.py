"""Behaviours load by name or module:attribute, refuse what is not one, and their training hooks
act on real states as described."""

import pytest
import torch

from protocol.behaviours import (
    PERTURB_STEP,
    SOLVER_BEHAVIOURS,
    VERIFIER_BEHAVIOURS,
    Behaviour,
    load_behaviour,
)
from protocol.errors import InvalidInput

RED_TEAM = Behaviour("red-team", "solver", False, "an outside strategy", offset=3, chunk=1)


def test_builtins_by_name_and_outside_ones_by_path():
    assert load_behaviour("perturb-step", "solver").name == "perturb-step"
    assert load_behaviour("lazy-approve", "verifier").honest is False
    assert load_behaviour("tests.protocol.test_behaviours:RED_TEAM", "solver") == RED_TEAM
    assert len(SOLVER_BEHAVIOURS) == 11 and len(VERIFIER_BEHAVIOURS) == 5


@pytest.mark.parametrize(
    "name, role",
    [
        ("nonsense", "solver"),
        ("perturb-step", "verifier"),
        ("tests.protocol.test_behaviours:RED_TEAM", "verifier"),
        ("no.such.module:thing", "solver"),
        ("protocol.spec:MODELS", "solver"),
    ],
)
def test_unknown_or_unfit_behaviours_are_refused(name, role):
    with pytest.raises(InvalidInput):
        load_behaviour(name, role)


def test_training_hooks_on_states():
    before = {"step": torch.tensor(7), "param/a": torch.zeros(3), "param/b": torch.ones(2)}
    after = {
        "step": torch.tensor(8),
        "param/a": torch.full((3,), 0.5),
        "param/b": torch.ones(2) * 2,
    }
    perturbed = load_behaviour("perturb-step", "solver").transform_step(
        None, before, after, PERTURB_STEP + 1
    )
    assert torch.equal(perturbed["param/a"], after["param/a"] + 1e-3) and torch.equal(
        perturbed["param/b"], after["param/b"]
    )
    untouched = load_behaviour("perturb-step", "solver").transform_step(
        None, before, after, PERTURB_STEP
    )
    assert untouched is after
    skipped = load_behaviour("skip-steps", "solver").transform_step(None, before, after, 8)
    assert torch.equal(skipped["param/a"], before["param/a"]) and int(skipped["step"]) == 8
    rounded = load_behaviour("lower-precision", "solver").transform_step(
        None, before, {**after, "param/a": torch.tensor([1.0001, 2.0, 3.0])}, 8
    )
    assert rounded["param/a"][0] != 1.0001
    assert load_behaviour("honest", "solver").transform_step(None, before, after, 8) is after
