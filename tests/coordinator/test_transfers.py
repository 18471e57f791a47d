"""Streaming, resumable transfers against a real coordinator on loopback (SQLite and PostgreSQL):
an interrupted 200 MiB upload resumes where it stopped, downloads honour Range, corrupted blobs
are refused, and uploaders who lie, overflow, tamper or poke at another key's session get clear
4xx answers."""

import hashlib
import json
import logging
import os
import struct
import threading
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

import sdk.client
from protocol.wire import UNSIGNED_PAYLOAD, ProblemCode
from sdk.client import (
    CoordinatorClient,
    CoordinatorError,
    compute_signed_headers,
    compute_signed_headers_for_digest,
)
from sdk.responses import UploadView
from tests.coordinator.market import commit_signed, funded, train_tiny_job
from tests.coordinator.server import client_factory, running_server
from tests.coordinator.test_datasets import make_dataset_file

MIB = 1 << 20


def write_dataset_file(path: Path, total_bytes: int) -> str:
    """A valid safetensors dataset of about `total_bytes`, written a few MiB at a time (random
    float32 inputs, int64 labels 0); returns its SHA-256."""
    rows, width = total_bytes // (64 * 4 + 8), 64
    inputs_len, targets_len = rows * width * 4, rows * 8
    header = {
        "inputs": {"dtype": "F32", "shape": [rows, width], "data_offsets": [0, inputs_len]},
        "targets": {
            "dtype": "I64",
            "shape": [rows],
            "data_offsets": [inputs_len, inputs_len + targets_len],
        },
    }
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for piece in _dataset_pieces(encoded, inputs_len, targets_len):
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def _dataset_pieces(header: bytes, inputs_len: int, targets_len: int):
    yield struct.pack("<Q", len(header)) + header
    block = os.urandom(8 * MIB)
    left = inputs_len
    while left:
        yield block[: min(left, len(block))]
        left -= min(left, len(block))
    yield bytes(targets_len)


class Interrupted(Exception):
    """The client 'crashes' in the middle of sending a part."""


def interrupt_after(monkeypatch, offset: int) -> None:
    """The part that starts at `offset` sends half of itself, then the client dies."""
    real = sdk.client.iter_file_range

    def failing(path, start=0, length=None):
        if start != offset or length is None:
            yield from real(path, start, length)
            return
        sent = 0
        for chunk in real(path, start, length):
            yield chunk
            sent += len(chunk)
            if sent >= length // 2:
                raise Interrupted

    monkeypatch.setattr(sdk.client, "iter_file_range", failing)


def declare(client: CoordinatorClient, path: Path, kind: str = "dataset", **target) -> UploadView:
    """POST /v1/uploads again: what a restarted client does to find where it stopped."""
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    body = {"kind": kind, "sha256": sha256, "size": path.stat().st_size, **target}
    return client._post(UploadView, "/v1/uploads", body)


def stored_path(server, kind: str, sha256: str) -> Path:
    return server.settings.get_blob_dir() / kind / sha256[:2] / sha256


def test_interrupted_200_mib_upload_resumes_where_it_stopped(
    server, make_client, tmp_path, monkeypatch
):
    client = funded(make_client)
    path = tmp_path / "big.safetensors"
    sha256 = write_dataset_file(path, 200 * MIB)
    part = 32 * MIB
    interrupt_after(monkeypatch, 3 * part)
    with pytest.raises(Interrupted):
        client.upload_dataset_file(path, part_size=part)
    monkeypatch.undo()
    stopped = declare(client, path)
    assert stopped.received == 3 * part  # three whole parts counted, the torn one not at all
    assert stopped.size == path.stat().st_size
    assert client.get_upload(stopped.id).received == 3 * part

    view = client.upload_dataset_file(path, part_size=part)  # a new call resumes the session
    assert (view.sha256, view.size) == (sha256, path.stat().st_size)
    on_disk = stored_path(server, "dataset", sha256)
    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == sha256
    with pytest.raises(CoordinatorError) as gone:
        client.get_upload(stopped.id)  # the session ended with its commit
    assert gone.value.status == 404
    assert not list(server.settings.get_upload_dir().glob("*.part"))  # no staged bytes left


def test_downloads_stream_whole_or_one_range(server, make_client, tmp_path):
    client = funded(make_client)
    data = make_dataset_file()
    sha256 = client.upload_dataset(data).sha256
    url = f"{server.url}/v1/datasets/{sha256}"
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    cases = {
        "bytes=0-9": (0, 10),
        "bytes=100-": (100, len(data)),
        "bytes=-5": (len(data) - 5, len(data)),
        f"bytes=10-{len(data) + 50}": (10, len(data)),  # past the end: up to the end
    }
    for header, (start, end) in cases.items():
        response = httpx.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
    # an interrupted download resumes from its .part file
    target = tmp_path / "copy.safetensors"
    (tmp_path / "copy.safetensors.part").write_bytes(data[:1000])
    assert client.download_dataset_to(sha256, target).read_bytes() == data
    assert not (tmp_path / "copy.safetensors.part").exists()


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "items=0-1",
        "bytes=0-1,3-4",
        "bytes=5-2",
        "bytes=-0",
        "bytes=-",
        "bytes=99999999-",
        "bytes=" + "9" * 40 + "-",
        "bytes=\u00b9-2",
    ],
)
def test_bad_ranges_are_416_never_500(server, make_client, header):
    client = funded(make_client)
    data = make_dataset_file()
    sha256 = client.upload_dataset(data).sha256
    response = httpx.get(
        f"{server.url}/v1/datasets/{sha256}", headers={"Range": header.encode("utf-8")}
    )
    assert response.status_code == 416, (header, response.text)
    problem = response.json()
    assert problem["code"] == "range_not_satisfiable", problem
    assert response.headers["content-range"] == f"bytes */{len(data)}"


def test_a_corrupted_blob_is_refused_with_a_clear_error(server, make_client, caplog):
    client = funded(make_client)
    data = make_dataset_file()
    sha256 = client.upload_dataset(data).sha256
    path = stored_path(server, "dataset", sha256)
    with open(path, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with caplog.at_level(logging.ERROR, logger="veritrain.coordinator.blobstore"):
        for headers in ({}, {"Range": "bytes=0-9"}):
            response = httpx.get(f"{server.url}/v1/datasets/{sha256}", headers=headers)
            assert response.status_code == 409, response.text
            problem = response.json()
            assert problem["code"] == ProblemCode.BLOB_CORRUPT
            assert "corrupt" in problem["detail"] and sha256 in problem["detail"]
    assert any("corrupt" in r.getMessage() and sha256 in r.getMessage() for r in caplog.records)
    with pytest.raises(CoordinatorError) as refused:
        client.download_dataset(sha256)
    assert refused.value.status == 409
    # uploading the same bytes again restores the blob
    client.upload_dataset(data)
    assert client.download_dataset(sha256) == data


# --- attacks ------------------------------------------------------------------------------------


def _put_part(client: CoordinatorClient, upload_id: str, offset: int, body: bytes, key=None):
    path = f"/v1/uploads/{upload_id}?offset={offset}"
    headers = compute_signed_headers(key or client.key, "PUT", path, body)
    headers["Content-Type"] = "application/octet-stream"
    return client._http.put(path, content=body, headers=headers)


def test_an_uploader_who_lies_about_the_hash_is_refused_and_starts_again(make_client, tmp_path):
    client = funded(make_client)
    data = make_dataset_file()
    path = tmp_path / "d.safetensors"
    path.write_bytes(data)
    lie = {"kind": "dataset", "sha256": "ab" * 32, "size": len(data)}
    upload = client._post(UploadView, "/v1/uploads", lie)
    assert _put_part(client, upload.id, 0, data).status_code == 200
    with pytest.raises(CoordinatorError) as refused:
        client._post(dict, f"/v1/uploads/{upload.id}/commit")
    assert refused.value.status == 422 and "hash" in refused.value.problem["detail"]
    with pytest.raises(CoordinatorError) as gone:
        client.get_upload(upload.id)  # discarded: the liar starts again
    assert gone.value.status == 404


def test_more_bytes_than_declared_are_refused_and_not_counted(make_client):
    client = funded(make_client)
    upload = client._post(
        UploadView, "/v1/uploads", {"kind": "dataset", "sha256": "cd" * 32, "size": 100}
    )
    response = _put_part(client, upload.id, 0, b"x" * 150)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert _put_part(client, upload.id, 0, b"x" * 60).status_code == 200
    # chunked (no Content-Length): counted as it streams
    path = f"/v1/uploads/{upload.id}?offset=60"
    body = b"y" * 50
    headers = compute_signed_headers(client.key, "PUT", path, body)
    response = client._http.put(path, content=iter([body[:25], body[25:]]), headers=headers)
    assert response.status_code == 413, response.text
    assert client.get_upload(upload.id).received == 60
    with pytest.raises(CoordinatorError) as early:
        client._post(dict, f"/v1/uploads/{upload.id}/commit")
    assert early.value.status == 409 and "60 of the 100" in early.value.problem["detail"]


def test_nobody_resumes_or_commits_another_keys_session(make_client):
    owner, intruder = funded(make_client), funded(make_client)
    upload = owner._post(
        UploadView, "/v1/uploads", {"kind": "dataset", "sha256": "ef" * 32, "size": 10}
    )
    response = _put_part(intruder, upload.id, 0, b"z" * 10)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    with pytest.raises(CoordinatorError) as refused:
        intruder._post(dict, f"/v1/uploads/{upload.id}/commit")
    assert refused.value.status == 403
    # claiming the owner's key without its signature is no better
    response = _put_part(owner, upload.id, 0, b"z" * 10, key=SigningKey.generate())
    assert response.status_code in (401, 403)
    assert owner.get_upload(upload.id).received == 0


def test_a_tampered_or_misplaced_part_is_refused_and_not_counted(make_client):
    client = funded(make_client)
    upload = client._post(
        UploadView, "/v1/uploads", {"kind": "dataset", "sha256": "01" * 32, "size": 20}
    )
    path = f"/v1/uploads/{upload.id}?offset=0"
    headers = compute_signed_headers(client.key, "PUT", path, b"a" * 10)
    response = client._http.put(path, content=b"b" * 10, headers=headers)  # not what was signed
    assert response.status_code == 401, response.text
    assert client.get_upload(upload.id).received == 0
    assert _put_part(client, upload.id, 5, b"c" * 5).status_code == 409  # not where it stands
    unsigned = client._http.put(path, content=b"d" * 10)
    assert unsigned.status_code == 401
    assert client.get_upload(upload.id).received == 0


def test_declarations_the_coordinator_cannot_take_are_4xx(server, make_client):
    client = funded(make_client)
    too_big = server.settings.max_checkpoint_body + 1
    bad = [
        ({"kind": "dataset", "sha256": "02" * 32, "size": too_big}, 422),
        ({"kind": "dataset", "sha256": "02" * 32, "size": 5, "job_id": "03" * 32}, 422),
        ({"kind": "checkpoint", "sha256": "02" * 32, "size": 5}, 422),
        (
            {
                "kind": "checkpoint",
                "sha256": "02" * 32,
                "size": 5,
                "job_id": "03" * 32,
                "index": 0,
                "step": 0,
            },
            404,
        ),
        ({"kind": "blob", "sha256": "02" * 32, "size": 5}, 422),
        ({"kind": "dataset", "sha256": "02" * 32, "size": -1}, 422),
    ]
    for body, status in bad:
        with pytest.raises(CoordinatorError) as refused:
            client._post(UploadView, "/v1/uploads", body)
        assert refused.value.status == status, (body, refused.value)
    broke = make_client()  # holds nothing: may not store data
    with pytest.raises(CoordinatorError) as poor:
        broke._post(UploadView, "/v1/uploads", {"kind": "dataset", "sha256": "02" * 32, "size": 5})
    assert poor.value.status == 409


def test_a_checkpoint_streams_up_in_parts_and_down_in_ranges(server, make_client, tmp_path):
    submitter, solver = funded(make_client), funded(make_client)
    job = train_tiny_job(tmp_path / "job")
    submitter.submit_job(job.spec_json, 1000, min_stake=400, verifier_fee=50, bidding_s=30)
    solver.bid(job.job_id, 600, 400, job.profile)
    solver.advance_clock(31)
    solver.award(job.job_id)
    commit_signed(solver, job)
    last = len(job.entries()) - 1  # no verifier is drawn: only the final model is asked for
    step = job.entries()[last][0]
    with pytest.raises(CoordinatorError) as unasked:  # refused at the declaration, before a byte
        solver.upload_checkpoint_file(
            job.job_id, 0, 0, job.store.checkpoint_path(0), job.proof(0), part_size=700
        )
    assert unasked.value.problem_code is ProblemCode.INVALID_STATE
    assert "not asked for" in str(unasked.value)
    path = job.store.checkpoint_path(last)
    intruder = funded(make_client)
    with pytest.raises(CoordinatorError) as refused:
        intruder.upload_checkpoint_file(
            job.job_id, last, step, path, job.proof(last), part_size=700
        )
    assert refused.value.status == 403
    with pytest.raises(CoordinatorError) as wrong_step:
        solver.upload_checkpoint_file(
            job.job_id, last, step - 1, path, job.proof(last), part_size=700
        )
    assert wrong_step.value.problem_code is ProblemCode.CHECKPOINT_CORRUPT
    size = path.stat().st_size
    for wrong in (size - 1, size + 1, 16 * 2**30):  # a state of this job has exactly one size
        body = {"kind": "checkpoint", "sha256": "ab" * 32, "size": wrong, "job_id": job.job_id}
        body.update(index=last, step=step, proof=[p.hex() for p in job.proof(last)])
        with pytest.raises(CoordinatorError) as oversize:  # nothing staged beyond a real state
            solver._post(UploadView, "/v1/uploads", body)
        assert oversize.value.status == 422 and "exactly" in str(oversize.value), wrong
    view = solver.upload_checkpoint_file(
        job.job_id, last, step, path, job.proof(last), part_size=700
    )
    data = path.read_bytes()
    assert view.sha256 == hashlib.sha256(data).hexdigest() and view.size == len(data)
    assert view.state_root == job.entries()[last][1].hex()  # the streamed root is the state's
    url = f"{server.url}/v1/jobs/{job.job_id}/checkpoints/{last}"
    part = httpx.get(url, headers={"Range": "bytes=8-107"})
    assert part.status_code == 206 and part.content == data[8:108]
    with pytest.raises(CoordinatorError) as again:  # stored: a second upload is refused at once
        solver.upload_checkpoint_file(job.job_id, last, step, path, job.proof(last))
    assert "stored already" in str(again.value)
    copy = solver.download_checkpoint_to(job.job_id, last, tmp_path / "ckpt.safetensors")
    assert copy.read_bytes() == data


def test_a_flood_of_bodies_is_turned_away_and_an_honest_upload_still_completes(tmp_path):
    """A replica receives at most `max_receiving_bodies` bodies at once (each holds megabytes in
    flight): one more is answered 503 `busy` before a byte of it is read, and the SDK's retry
    completes the honest upload once a slot is free."""
    with (
        running_server("sqlite", tmp_path, max_receiving_bodies=1) as srv,
        client_factory(srv.url) as make,
    ):
        hog, honest = funded(make), funded(make)
        hog_file, honest_file = tmp_path / "hog.safetensors", tmp_path / "honest.safetensors"
        write_dataset_file(hog_file, 4 * MIB)
        sha256 = write_dataset_file(honest_file, 4 * MIB)
        stalled, resume = threading.Event(), threading.Event()

        def slow_body(path, start=0, length=None):  # the hog's body stops halfway until told
            for index, chunk in enumerate(real_iter(path, start, length)):
                if index == 2 and path == hog_file:
                    stalled.set()
                    resume.wait(30)
                yield chunk

        real_iter = sdk.client.iter_file_range
        hogging = threading.Thread(
            target=_upload_with_body, args=(hog, hog_file, slow_body), daemon=True
        )
        hogging.start()
        assert stalled.wait(30)
        upload = declare(honest, honest_file)
        with pytest.raises(CoordinatorError) as busy:
            honest._put_part(upload, honest_file, upload.size, _sha256_of(honest_file))
        assert (busy.value.status, busy.value.problem_code) == (503, ProblemCode.BUSY)
        resume.set()
        hogging.join(30)
        assert honest.upload_dataset_file(honest_file).sha256 == sha256


def _upload_with_body(client, path, body) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sdk.client, "iter_file_range", body)
        client.upload_dataset_file(path)


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _put_unsigned_part(client, upload_id: str, offset: int, body: bytes, key=None, nonce=None):
    path = f"/v1/uploads/{upload_id}?offset={offset}"
    headers = compute_signed_headers_for_digest(
        key or client.key, "PUT", path, UNSIGNED_PAYLOAD, nonce=nonce
    )
    headers["Content-Type"] = "application/octet-stream"
    return client._http.put(path, content=body, headers=headers)


def test_parts_signed_over_unsigned_payload_are_bound_by_the_declared_sha256(make_client):
    """A part signed over UNSIGNED-PAYLOAD is taken without its own digest: the declaration's
    SHA-256 binds its bytes, so altered bytes never become a blob (the session is discarded and
    the uploader starts again); a replayed part or a stranger's key is refused before counting."""
    client, stranger = funded(make_client), funded(make_client)
    data = make_dataset_file()
    declared = {"kind": "dataset", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    upload = client._post(UploadView, "/v1/uploads", declared)
    half = len(data) // 2
    altered = data[:half][:-1] + bytes([data[half - 1] ^ 1])
    assert _put_unsigned_part(client, upload.id, 0, altered).status_code == 200
    refused = _put_unsigned_part(stranger, upload.id, half, data[half:], key=stranger.key)
    assert refused.status_code == 403
    nonce = "n" * 32
    assert _put_unsigned_part(client, upload.id, half, data[half:], nonce=nonce).status_code == 200
    replayed = _put_unsigned_part(client, upload.id, len(data), b"", nonce=nonce)
    assert (replayed.status_code, replayed.json()["code"]) == (409, "nonce_reused")
    assert client.get_upload(upload.id).received == len(data)
    with pytest.raises(CoordinatorError) as mismatch:
        client._send("POST", f"/v1/uploads/{upload.id}/commit", json_body={}, signed=True)
    assert mismatch.value.status == 422, mismatch.value
    with pytest.raises(CoordinatorError) as gone:
        client.get_upload(upload.id)
    assert gone.value.status == 404  # discarded: the next declaration starts from byte 0
    again = client._post(UploadView, "/v1/uploads", declared)
    assert again.received == 0
    assert _put_unsigned_part(client, again.id, 0, data).status_code == 200
    stored = client._json(
        client._send("POST", f"/v1/uploads/{again.id}/commit", json_body={}, signed=True)
    )
    assert stored["sha256"] == declared["sha256"]


def test_unsigned_payload_signs_upload_parts_only(make_client):
    """Anywhere else the body's own digest is what a signature covers: a write signed over
    UNSIGNED-PAYLOAD is refused (here a single-request dataset PUT with any body)."""
    client = funded(make_client)
    data = make_dataset_file()
    path = f"/v1/datasets/{hashlib.sha256(data).hexdigest()}"
    headers = compute_signed_headers_for_digest(client.key, "PUT", path, UNSIGNED_PAYLOAD)
    headers["Content-Type"] = "application/octet-stream"
    response = client._http.put(path, content=data, headers=headers)
    assert response.status_code == 401, response.text
    with pytest.raises(CoordinatorError) as absent:
        client.download_dataset(hashlib.sha256(data).hexdigest())
    assert absent.value.status == 404
