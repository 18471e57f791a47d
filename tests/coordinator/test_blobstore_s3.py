"""The S3 backend against a server that speaks the S3 protocol over HTTP on loopback (moto's
ThreadedMotoServer; docs/decisions.md says what that leaves untested), and a coordinator whose
blobs live there."""

import hashlib
import os
import socket

import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig

from coordinator.blobstore.errors import BlobCorrupt, BlobMismatch, BlobMissing
from coordinator.blobstore.s3 import S3BlobStore
from tests.coordinator.market import funded
from tests.coordinator.server import ServerThread, client_factory, make_settings
from tests.coordinator.test_datasets import make_dataset_file

moto_server = pytest.importorskip("moto.server")
MIB = 1 << 20
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_url():
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # boto3's standard chain, as a deployment would set it
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def bucket(s3_url, request) -> str:
    name = "vt-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:20]
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3_url, bucket) -> S3BlobStore:
    # 5 MiB parts (S3's minimum): DATA goes up as a real three-part multipart upload
    parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    return S3BlobStore(boto3.client("s3", endpoint_url=s3_url), bucket, "vt/", parts)


DATA = os.urandom(11 * MIB + 17)
SHA = hashlib.sha256(DATA).hexdigest()


def test_put_get_range_size_delete(store):
    chunks = [DATA[i : i + 100_000] for i in range(0, len(DATA), 100_000)]
    assert store.put_stream("checkpoint", SHA, chunks) == len(DATA)
    assert store.exists("checkpoint", SHA) and not store.exists("dataset", SHA)
    assert store.size("checkpoint", SHA) == len(DATA)
    head = store.client.head_object(Bucket=store.bucket, Key=store.key("checkpoint", SHA))
    assert head["ETag"].endswith('-3"')  # it went up as a three-part multipart upload
    assert store.read_bytes("checkpoint", SHA) == DATA
    assert b"".join(store.open_range("checkpoint", SHA, 1000, 5000)) == DATA[1000:5000]
    assert b"".join(store.open_range("checkpoint", SHA, len(DATA) - 3)) == DATA[-3:]
    assert [name for name, _ in store.iter_objects("checkpoint")] == [SHA]
    store.delete("checkpoint", SHA)
    assert not store.exists("checkpoint", SHA)
    with pytest.raises(BlobMissing):
        list(store.open_range("checkpoint", SHA))


def test_bytes_that_do_not_match_their_address_are_removed(store):
    with pytest.raises(BlobMismatch):
        store.put_stream("dataset", "0" * 64, [DATA])
    assert not store.exists("dataset", "0" * 64)


def test_a_corrupted_object_is_refused(store):
    store.put_stream("state", SHA, [DATA])
    store.client.put_object(
        Bucket=store.bucket, Key=store.key("state", SHA), Body=DATA[:-1] + b"\x00"
    )
    with pytest.raises(BlobCorrupt, match="corrupt"):
        store.open_range("state", SHA, 0, 10)
    with pytest.raises(BlobCorrupt):
        store.read_bytes("state", SHA)


def test_a_coordinator_on_s3_uploads_resumably_and_serves_ranges(s3_url, bucket, tmp_path):
    settings = make_settings(
        f"sqlite:///{tmp_path / 'c.db'}",
        tmp_path,
        blob_store="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_url,
        upload_dir=tmp_path / "uploads",
    )
    data = make_dataset_file()
    path = tmp_path / "d.safetensors"
    path.write_bytes(data)
    with ServerThread(settings) as server, client_factory(server.url) as make:
        client = funded(make)
        view = client.upload_dataset_file(path, part_size=1000)
        assert view.sha256 == hashlib.sha256(data).hexdigest()
        stored = boto3.client("s3", endpoint_url=s3_url).get_object(
            Bucket=bucket, Key=f"dataset/{view.sha256}"
        )
        assert stored["Body"].read() == data
        part = httpx.get(f"{server.url}/v1/datasets/{view.sha256}", headers={"Range": "bytes=-9"})
        assert part.status_code == 206 and part.content == data[-9:]
        assert client.download_dataset(view.sha256) == data
