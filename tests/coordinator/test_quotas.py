"""Per-key quotas (open jobs, stored dataset bytes) and per-key rate limits (429 + Retry-After),
over HTTP against a real server on both engines; and the token bucket on its own."""

import hashlib

import httpx
import pytest
from nacl.signing import SigningKey

from coordinator.errors import RateLimited
from coordinator.ratelimit import RateLimiter
from protocol.presets import example_job_spec_json
from protocol.wire import ProblemCode
from sdk.client import CoordinatorClient, CoordinatorError, compute_signed_headers
from tests.coordinator.server import client_factory, running_server
from tests.coordinator.test_datasets import make_dataset_file

OPEN_JOBS = 2


def _spec(seed: int) -> dict:
    spec = example_job_spec_json("mlp", steps=2)
    spec["seed"] = seed
    return spec


def _refusal(call) -> CoordinatorError:
    with pytest.raises(CoordinatorError) as refused:
        call()
    return refused.value


@pytest.fixture
def quota_server(backend, tmp_path):
    dataset_size = len(make_dataset_file())
    with running_server(
        backend,
        tmp_path,
        max_open_jobs_per_key=OPEN_JOBS,
        max_dataset_bytes_per_key=max(1024, dataset_size + dataset_size // 2),
    ) as server:
        yield server


@pytest.fixture
def client_of(quota_server):
    with client_factory(quota_server.url) as make:

        def funded_client(funds: int = 10_000, **kwargs) -> CoordinatorClient:
            client = make(**kwargs)
            if funds:
                client.faucet(funds)
            return client

        yield funded_client


def test_open_jobs_quota_refuses_the_next_job_and_frees_a_slot_when_one_ends(client_of):
    submitter = client_of()
    jobs = [submitter.submit_job(_spec(seed), 100, bidding_s=0) for seed in range(OPEN_JOBS)]
    refused = _refusal(lambda: submitter.submit_job(_spec(99), 100, bidding_s=0))
    assert (refused.status, refused.problem_code) == (409, ProblemCode.QUOTA_EXCEEDED)
    assert submitter.get_balance() == 10_000 - 100 * OPEN_JOBS  # the refusal moved nothing
    assert client_of().submit_job(_spec(99), 100).job_id  # another key has its own quota
    submitter.award(jobs[0].job_id)  # no bids: cancelled, no longer open
    assert submitter.submit_job(_spec(99 + 1), 100).job_id


def test_dataset_quota_counts_new_bytes_only(client_of):
    uploader = client_of()
    first = make_dataset_file()
    assert uploader.upload_dataset(first).size == len(first)
    assert uploader.upload_dataset(first).size == len(first)  # stored already: costs nothing
    second = first[:-8] + b" " * 8  # the same layout, other bytes: a new blob
    refused = _refusal(lambda: uploader.upload_dataset(second))
    assert (refused.status, refused.problem_code) == (409, ProblemCode.QUOTA_EXCEEDED)
    refused_hash = hashlib.sha256(second).hexdigest()
    assert _refusal(lambda: uploader.download_dataset(refused_hash)).status == 404
    assert client_of().upload_dataset(second).size == len(second)  # not this key's bytes


def test_a_key_with_no_funds_stores_nothing(client_of):
    stranger = client_of(funds=0)
    refused = _refusal(lambda: stranger.upload_dataset(make_dataset_file()))
    assert (refused.status, refused.problem_code) == (409, ProblemCode.INSUFFICIENT_FUNDS)


# --- rate limits ------------------------------------------------------------------------------


@pytest.fixture
def limited_server(tmp_path):
    with running_server("sqlite", tmp_path, rate_limit_per_s=0.5, rate_limit_burst=3) as server:
        yield server


def _signed_faucet(url: str, key: SigningKey, signature: str | None = None) -> httpx.Response:
    body = b'{"amount": 1}'
    headers = compute_signed_headers(key, "POST", "/v1/dev/faucet", body)
    if signature is not None:
        headers["X-Veritrain-Signature"] = signature
    headers["Content-Type"] = "application/json"
    return httpx.post(url + "/v1/dev/faucet", content=body, headers=headers)


def test_a_key_over_its_rate_gets_429_with_retry_after(limited_server):
    key = SigningKey.generate()
    assert [_signed_faucet(limited_server.url, key).status_code for _ in range(3)] == [200] * 3
    limited = _signed_faucet(limited_server.url, key)
    assert limited.status_code == 429
    assert limited.json()["code"] == ProblemCode.RATE_LIMITED
    assert 1 <= int(limited.headers["Retry-After"]) <= 2  # one token at 0.5/s
    assert _signed_faucet(limited_server.url, SigningKey.generate()).status_code == 200
    assert httpx.get(limited_server.url + "/v1/info").status_code == 200  # reads are not signed


def test_bad_signatures_do_not_spend_the_keys_budget(limited_server):
    key = SigningKey.generate()
    for _ in range(5):
        assert _signed_faucet(limited_server.url, key, "00" * 64).status_code == 401
    assert _signed_faucet(limited_server.url, key).status_code == 200


def test_the_client_waits_out_retry_after_and_succeeds(limited_server):
    with CoordinatorClient(limited_server.url, SigningKey.generate(), retries=2) as client:
        for _ in range(4):  # the fourth waits ~2 s for a token instead of failing
            client.faucet(1)
        assert client.get_balance() == 4


def test_bucket_refills_at_its_rate_and_caps_at_its_burst():
    limiter = RateLimiter(rate_per_s=2.0, burst=2)
    limiter.take("k", 0.0)
    limiter.take("k", 0.0)
    with pytest.raises(RateLimited) as limited:
        limiter.take("k", 0.0)
    assert limited.value.retry_after_s == 1
    limiter.take("k", 0.5)  # one token back after half a second
    limiter.take("k", 100.0)
    limiter.take("k", 100.0)  # a long pause refills only up to the burst
    with pytest.raises(RateLimited):
        limiter.take("k", 100.0)


def test_bucket_memory_is_bounded():
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=3)
    for key in "abcd":
        limiter.take(key, 0.0)
    assert list(limiter._buckets) == ["b", "c", "d"]
    assert RateLimiter(rate_per_s=0, burst=1).take("k", 0.0) is None  # 0 turns limits off


def test_racing_submissions_of_one_key_cannot_overshoot_the_quota(quota_server):
    """The attacker sends its submissions at once, hoping each sees the count before the others
    land: the quota is checked after the log lock, so exactly OPEN_JOBS get in."""
    from concurrent.futures import ThreadPoolExecutor

    key = SigningKey.generate()
    with client_factory(quota_server.url) as make:
        make(key).faucet(10_000)

        def submit(seed: int) -> str:
            try:
                make(key).submit_job(_spec(seed), 100)
                return "ok"
            except CoordinatorError as err:
                return err.problem_code

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(submit, range(100, 106)))
        assert outcomes.count("ok") == OPEN_JOBS, outcomes
        assert outcomes.count(ProblemCode.QUOTA_EXCEEDED) == 6 - OPEN_JOBS, outcomes
        assert make(key).get_balance() == 10_000 - 100 * OPEN_JOBS
