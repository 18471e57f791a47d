"""Concurrent clients racing on one balance: no overspend, every invariant holds (on every
backend of the `backend` fixture: SQLite, and PostgreSQL where reachable — in-process, and as
`coordinator serve --workers 4`, whose replicas share nothing but the database)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from nacl.signing import SigningKey

from cli.audit_cmd import check_coordinator
from protocol.wire import BidStatus, ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError
from tests.coordinator.server import backend_params, replica_params

CLIENTS = 32


@pytest.fixture(params=[*backend_params(), *replica_params()])
def backend(request) -> str:
    return request.param


def _race(fn, n=CLIENTS):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def test_racing_spenders_cannot_overspend(server, make_client, backend):
    key = SigningKey.generate()
    make_client(key).faucet(1000)
    receivers = [bytes(SigningKey.generate().verify_key).hex() for _ in range(CLIENTS)]

    def spend(i: int) -> str:
        with CoordinatorClient(server.url, key) as client:
            try:
                client.transfer(receivers[i], 100)
                return "ok"
            except CoordinatorError as err:
                return err.problem_code

    outcomes = _race(spend)
    assert outcomes.count("ok") == 10, outcomes
    assert set(outcomes) == {"ok", ProblemCode.INSUFFICIENT_FUNDS}
    reader = make_client(None)
    assert reader.get_balance(bytes(key.verify_key).hex()) == 0
    assert sum(reader.get_balance(r) for r in receivers) == 1000
    report = check_coordinator(reader)
    assert report.ok, report.problems


def test_racing_bidders_and_awarders_give_exactly_one_award(server, make_client, backend, tmp_path):
    from protocol.spec import compute_job_id, parse_job_spec
    from tests.coordinator.market import tiny_spec_json

    spec = tiny_spec_json(seed=7)
    job_id = compute_job_id(parse_job_spec(spec)).hex()
    profile = parse_job_spec(spec).profile.label
    submitter = make_client(SigningKey.generate())
    submitter.faucet(10_000)
    submitter.submit_job(spec, 1000, min_stake=250, bidding_s=30)
    keys = [SigningKey.generate() for _ in range(CLIENTS)]

    def bid(i: int) -> str:
        with CoordinatorClient(server.url, keys[i]) as client:
            client.faucet(300)
            client.bid(job_id, 500 + i % 4, 250 + i, profile)  # 8 bids tie at the lowest price
            return "ok"

    assert _race(bid) == ["ok"] * CLIENTS
    submitter.advance_clock(31)

    def award(i: int) -> str:
        with CoordinatorClient(server.url, keys[i]) as client:
            try:
                client.award(job_id)
                return "ok"
            except CoordinatorError as err:
                return err.problem_code

    outcomes = _race(award)
    assert outcomes.count("ok") == 1 and outcomes.count(ProblemCode.INVALID_STATE) == CLIENTS - 1, (
        outcomes
    )
    job = submitter.get_job(job_id)
    cheapest = [b for b in job.bids if b.price == 500]
    assert job.solver == cheapest[0].bidder  # earliest of the tied lowest bids (id order)
    assert [b.status for b in job.bids].count(BidStatus.WON) == 1
    awards = [
        e
        for e in submitter.iter_log_entries(submitter.get_tree_head().size)
        if '"kind":"job.awarded"' in e.body
    ]
    assert len(awards) == 1
    for i, key in enumerate(keys):
        expected = 300 - (250 + i) if bytes(key.verify_key).hex() == job.solver else 300
        assert submitter.get_balance(bytes(key.verify_key).hex()) == expected
    report = check_coordinator(submitter)
    assert report.ok, report.problems
