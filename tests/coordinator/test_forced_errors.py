"""Forced errors live in the coordinator (issue 11): the public seed makes a share of the drawn
assignments forced errors, fixed per job at submission; a verifier that reveals the true end
root of one (it committed before any root was public, so it recomputed) earns the jackpot
2·fee/φ, paid out of what slashes burned. Volunteers earn none; `veritrain audit` recomputes
every jackpot, and notices one that is wrong."""

import json

import pytest

from cli.audit_cmd import check_coordinator
from coordinator.verification import service as verification_service
from tests.coordinator.market import (
    funded,
    open_verification,
    slash_a_no_show_solver,
    train_tiny_job,
    verify_segment,
)
from tests.coordinator.server import client_factory, running_server

FEE, SLASHED = 50, 400  # open_verification's fee; a no-show solver's stake of 400


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_job(tmp_path_factory.mktemp("solver"), seed=61)


@pytest.fixture
def forcing_server(backend, tmp_path):
    with running_server(backend, tmp_path, forced_error_ppm=1_000_000) as server:
        yield server  # every drawn assignment is a forced error: the outcome is certain


@pytest.fixture
def client_of(forcing_server):
    with client_factory(forcing_server.url) as make:
        yield make


def _burn_something(client_of) -> None:
    """A solver that never commits is slashed: half its stake goes to the pool of burned money."""
    slash_a_no_show_solver(funded(client_of), funded(client_of), SLASHED)


def _agree(solver, verifier, trained, assignment) -> dict:
    """Replay honestly and reveal; returns the log data of the agreement."""
    seg = assignment.segment
    entries = trained.entries()
    solver.upload_checkpoint(  # the start (a no-op when it is stored already)
        trained.job_id, seg, entries[seg][0], trained.checkpoint_bytes(seg), trained.proof(seg)
    )
    salt = verify_segment(verifier, assignment.id, entries[seg + 1][1])
    end = seg + 1
    solver.upload_checkpoint(
        trained.job_id, end, entries[end][0], trained.checkpoint_bytes(end), trained.proof(end)
    )
    verifier.reveal_verification(assignment.id, entries[end][1], salt)
    size = verifier.get_tree_head().size
    agreed = [
        json.loads(e.body) for e in verifier.get_log_entries(0, size)
    ]  # the whole (small) log
    [data] = [
        e["data"]
        for e in agreed
        if e["kind"] == "verification.agreed" and e["data"]["assignment"] == assignment.id
    ]
    return data


def test_a_verifier_that_recomputes_a_forced_error_earns_the_jackpot(client_of, trained):
    _burn_something(client_of)
    submitter, solver, verifier = funded(client_of), funded(client_of), funded(client_of)
    assignment = open_verification(submitter, solver, verifier, trained)
    before = verifier.get_balance()
    data = _agree(solver, verifier, trained, assignment)
    pool = SLASHED - SLASHED // 2  # what the slash burned
    assert data["jackpot"] == min(2 * FEE, pool) == 2 * FEE  # 2·fee/φ at φ = 1
    assert verifier.get_balance() == before + 2 * FEE
    assert check_coordinator(submitter).ok


def test_the_jackpot_is_capped_by_what_slashes_burned(client_of, trained):
    submitter, solver, verifier = funded(client_of), funded(client_of), funded(client_of)
    assignment = open_verification(submitter, solver, verifier, trained)
    assert _agree(solver, verifier, trained, assignment)["jackpot"] == 0  # nothing burned yet
    assert check_coordinator(submitter).ok


def test_the_audit_notices_a_jackpot_the_rule_does_not_pay(client_of, trained, monkeypatch):
    _burn_something(client_of)
    real = verification_service._forced_error_jackpot
    monkeypatch.setattr(
        verification_service,
        "_forced_error_jackpot",
        lambda *args: real(*args) - 1,  # a coordinator that shaves a unit off
    )
    submitter, solver, verifier = funded(client_of), funded(client_of), funded(client_of)
    assignment = open_verification(submitter, solver, verifier, trained)
    _agree(solver, verifier, trained, assignment)
    report = check_coordinator(submitter)
    assert not report.ok
    assert any("forced-error rule" in p for p in report.problems)


def test_a_volunteer_earns_no_jackpot(client_of, trained):
    """A challenge is self-selected, never drawn from the seed: no forced error, no jackpot."""
    _burn_something(client_of)
    submitter, solver, verifier = funded(client_of), funded(client_of), funded(client_of)
    drawn = open_verification(submitter, solver, verifier, trained)
    _agree(solver, verifier, trained, drawn)  # the drawn check first: its end is then public
    volunteer = funded(client_of)
    volunteer.register_verifier([trained.profile], 500)
    other = 1 - drawn.segment
    challenge = volunteer.challenge_segment(trained.job_id, other)
    data = _agree(solver, volunteer, trained, challenge)
    assert data["assignment"] == challenge.id and data["jackpot"] == 0
    assert check_coordinator(submitter).ok
