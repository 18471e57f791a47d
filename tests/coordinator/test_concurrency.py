"""Concurrent clients racing on one balance: no overspend, every invariant holds."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from nacl.signing import SigningKey

from cli.audit_cmd import compute_audit
from sdk.client import CoordinatorClient, CoordinatorError

CLIENTS = 32


def _race(fn, n=CLIENTS):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
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
    assert set(outcomes) == {"ok", "insufficient_funds"}
    reader = make_client(None)
    assert reader.get_balance(bytes(key.verify_key).hex()) == 0
    assert sum(reader.get_balance(r) for r in receivers) == 1000
    report = compute_audit(reader)
    assert report.ok, report.problems
