"""Dataset files for jobs trained on a user's safetensors file: upload, checks, and the rule that
a job naming a file can be posted only once the file is on the coordinator."""

import hashlib

import pytest
import torch
from safetensors.torch import save

from protocol.presets import example_job_spec_json
from protocol.wire import ProblemCode
from sdk.client import CoordinatorError
from sdk.responses import DatasetView
from tests.coordinator.market import funded


def make_dataset_file() -> bytes:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(64, 8, generator=generator)
    return save({"inputs": inputs, "targets": (inputs.sum(dim=1) > 4).to(torch.int64)})


def file_job_spec(data: bytes) -> dict:
    spec = example_job_spec_json("mlp", steps=4)
    spec["dataset"] = {"kind": "safetensors", "sha256": hashlib.sha256(data).hexdigest()}
    return spec


def test_upload_is_content_addressed_and_idempotent(make_client):
    client = funded(make_client)
    data = make_dataset_file()
    first = client.upload_dataset(data)
    assert first == DatasetView(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert client.upload_dataset(data) == first
    assert client.download_dataset(first.sha256) == data


def test_job_on_a_file_needs_the_file_first(make_client):
    client = funded(make_client)
    data = make_dataset_file()
    with pytest.raises(CoordinatorError) as refused:
        client.submit_job(file_job_spec(data), bounty=100, min_stake=24, verifier_fee=5)
    assert refused.value.problem_code is ProblemCode.INVALID_STATE
    assert "PUT /v1/datasets/" in refused.value.problem["detail"]  # the detail says what to do
    client.upload_dataset(data)
    job = client.submit_job(file_job_spec(data), bounty=100, min_stake=24, verifier_fee=5)
    assert job.job_id


@pytest.mark.parametrize(
    "body, field",
    [
        (b"not safetensors at all", "file"),
        (save({"inputs": torch.zeros(4, 2, dtype=torch.int64)}), "dataset"),  # no targets
        (save({"inputs": torch.full((2,), float("nan"))}), "dataset"),  # weights must be finite
    ],
)
def test_unusable_files_are_422(make_client, body, field):
    client = funded(make_client)
    with pytest.raises(CoordinatorError) as refused:
        client.upload_dataset(body)
    assert refused.value.problem_code is ProblemCode.INVALID_SPEC
    assert refused.value.problem.get("field") == field


def test_wrong_address_is_422_and_unknown_is_404(make_client):
    client = funded(make_client)
    data = make_dataset_file()
    with pytest.raises(CoordinatorError) as wrong:
        client._send(
            "PUT",
            f"/v1/datasets/{'0' * 64}",
            content=data,
            signed=True,
            content_type="application/octet-stream",
        )
    assert wrong.value.problem_code is ProblemCode.INVALID_INPUT
    assert wrong.value.problem.get("field") == "sha256"
    with pytest.raises(CoordinatorError) as missing:
        client.download_dataset("1" * 64)
    assert missing.value.problem_code is ProblemCode.NOT_FOUND


def test_a_large_dataset_is_checked_and_built_in_a_worker_never_in_the_replica(
    tmp_path, monkeypatch
):
    """Above max_in_process_bytes the replica never parses a dataset: the upload check, the
    submission validator and checkpoint 0 all run in a worker (reading the stored file), with
    the same answers, a malformed file still refused naming why."""
    from coordinator.datasets import service as datasets
    from protocol.spec import compute_job_id, parse_job_spec
    from tests.coordinator.server import client_factory, running_server

    def never(*args, **kwargs):
        raise AssertionError("the replica parsed a dataset")

    monkeypatch.setattr(datasets, "check_job_file", never)
    monkeypatch.setattr(datasets, "get_dataset_bytes", never)
    with (
        running_server("sqlite", tmp_path, max_in_process_bytes=0) as srv,
        client_factory(srv.url) as make,
    ):
        client = funded(make)
        with pytest.raises(CoordinatorError) as refused:
            client.upload_dataset(save({"inputs": torch.zeros(4, 2, dtype=torch.int64)}))
        assert refused.value.status == 422 and "targets" in refused.value.problem["detail"]
        data = make_dataset_file()
        client.upload_dataset(data)
        spec = file_job_spec(data)
        bad = {**spec, "model": {"name": "mlp", "config": {"hidden": [0]}}}
        with pytest.raises(CoordinatorError) as invalid:
            client.submit_job(bad, bounty=100, min_stake=24, verifier_fee=5)
        assert invalid.value.status == 422 and "model.config" in str(invalid.value)
        job = client.submit_job(spec, bounty=100, min_stake=24, verifier_fee=5)
        assert job.job_id == compute_job_id(parse_job_spec(spec)).hex()
        assert len(srv.app.state.runtime.referee_workers.workers) == 1
