"""Full state checks at upload: a checkpoint (or a dispute state) must hold exactly the tensors,
dtypes and shapes its job's training program produces — a made-up tensor, a missing one, a wrong
shape or dtype is a 422 `checkpoint_corrupt` naming the tensor, before any transaction."""

import httpx
import pytest
import torch
from nacl.signing import SigningKey

from coordinator.jobs.checkpoints import compute_staged_checkpoint
from coordinator.runtime import BoundedCache
from protocol.errors import CheckpointCorrupt
from protocol.spec import compute_job_id, parse_job_spec
from protocol.state import compute_state_layout, encode_state
from protocol.training import build_program
from sdk.client import compute_signed_headers
from tests.coordinator.market import funded, tiny_spec_json


def _initial_state():
    return build_program(parse_job_spec(tiny_spec_json())).initial_state()


def _param(state) -> str:
    return next(k for k in sorted(state) if k.startswith("param/"))


def _made_up(state):
    return {"step": state["step"], "param/made_up": torch.zeros(3)}


def _extra(state):
    return {**state, "opt/exp_avg/made_up": torch.zeros(3)}


def _missing(state):
    return {k: v for k, v in state.items() if k != _param(state)}


def _wrong_shape(state):
    return {**state, _param(state): torch.zeros(2, 2)}


def _wrong_dtype(state):
    return {**state, _param(state): state[_param(state)].to(torch.float64)}


# (how to break the state, the tensor the 422 must name)
BROKEN = {
    "made-up-tensor": (_made_up, lambda s: sorted(set(s) - {"step"})[0]),
    "extra-tensor": (_extra, lambda s: "opt/exp_avg/made_up"),
    "missing-tensor": (_missing, _param),
    "wrong-shape": (_wrong_shape, _param),
    "wrong-dtype": (_wrong_dtype, _param),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_staged_state_is_checked_against_the_jobs_layout_naming_the_tensor(case, tmp_path):
    state = _initial_state()
    layout = compute_state_layout(state)
    staged = tmp_path / "state.safetensors"
    staged.write_bytes(encode_state(state))
    compute_staged_checkpoint(staged, 0, layout)  # the real thing passes
    breaker, name = BROKEN[case]
    staged.write_bytes(encode_state(breaker(state)))
    with pytest.raises(CheckpointCorrupt) as err:
        compute_staged_checkpoint(staged, 0, layout)
    assert err.value.tensor == name(state) and name(state) in str(err.value)


def test_every_state_of_a_job_has_its_initial_layout():
    """Optimizer slots exist from step 0 and a step keeps dtypes and shapes: the layout the
    coordinator checks against is the same at every step."""
    for optimizer in ("sgd", "adamw"):
        spec = tiny_spec_json()
        spec["optimizer"] = {"name": optimizer, "lr": 0.01}
        program = build_program(parse_job_spec(spec))
        state = program.initial_state()
        layout = compute_state_layout(state)
        assert any(k.startswith("opt/") for k in layout)
        for _ in range(2):
            state = program.step(state)
            assert compute_state_layout(state) == layout


def test_layout_cache_is_bounded_and_computes_once():
    cache, calls = BoundedCache(size=2), []

    def compute(key):
        return lambda: calls.append(key) or key

    for key in ("a", "b", "a", "c", "a", "b"):
        assert cache.get_or_compute(key, compute(key)) == key
    assert calls == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert len(cache.items) == 2


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_upload_of_a_state_that_is_not_the_jobs_is_422_naming_the_tensor(server, make_client, case):
    spec = tiny_spec_json()
    funded(make_client).submit_job(spec, 100)
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    state = _initial_state()
    breaker, name = BROKEN[case]
    body = encode_state(breaker(state))
    path = f"/v1/jobs/{job_id}/checkpoints/0?step=0"
    headers = compute_signed_headers(SigningKey.generate(), "PUT", path, body)
    headers["Content-Type"] = "application/octet-stream"
    response = httpx.request("PUT", server.url + path, content=body, headers=headers, timeout=60)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "checkpoint_corrupt", problem
    assert name(state) in problem["detail"], problem


def test_the_referee_refuses_a_state_it_cannot_step_with_a_typed_error():
    """Never a KeyError: `UnsteppableState` (the supplier's fault) naming the tensor."""
    from protocol.errors import UnsteppableState
    from protocol.referee import compute_referee_chunk
    from protocol.state import compute_state_root

    program = build_program(parse_job_spec(tiny_spec_json()))
    state = _made_up(program.initial_state())
    with pytest.raises(UnsteppableState) as err:
        compute_referee_chunk(program, encode_state(state), compute_state_root(state), 0)
    assert err.value.tensor is not None and err.value.tensor in str(err.value)
    real = program.initial_state()
    assert (
        len(compute_referee_chunk(program, encode_state(real), compute_state_root(real), 0)) == 32
    )
