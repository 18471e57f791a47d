"""An S3-compatible backend (AWS S3, MinIO, Ceph RGW, …) through boto3: one object per blob under
`<prefix><kind>/<sha256>`. Uploads go through boto3's managed transfer (multipart above its
threshold, bounded memory); bytes are hashed as they are read from the source, and an object
whose bytes turn out not to match its address is deleted before anyone can reference it (the
ledger row is only written after the put returned)."""

import hashlib
from collections.abc import Iterable, Iterator

from botocore.exceptions import ClientError

from coordinator.blobstore.base import BlobStore, check_address, check_digest
from coordinator.blobstore.errors import BlobMissing


class _HashingReader:
    """A read()-able view of an iterable of chunks that hashes what is read."""

    def __init__(self, chunks: Iterable[bytes]):
        self.chunks = iter(chunks)
        self.pending = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        while amount < 0 or len(self.pending) < amount:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.pending += chunk
        cut = len(self.pending) if amount < 0 else min(amount, len(self.pending))
        out = bytes(self.pending[:cut])
        del self.pending[:cut]
        self.digest.update(out)
        self.size += len(out)
        return out


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3BlobStore(BlobStore):
    def __init__(self, client, bucket: str, prefix: str = "", transfer_config=None):
        self.client = client  # a boto3 S3 client, built by coordinator.blobstore.factory
        self.bucket = bucket
        self.prefix = prefix
        self.transfer_config = transfer_config  # boto3 TransferConfig (part sizes); None: default

    def key(self, kind: str, sha256: str) -> str:
        check_address(kind, sha256)
        return f"{self.prefix}{kind}/{sha256}"

    def put_stream(self, kind: str, sha256: str, chunks: Iterable[bytes]) -> int:
        key = self.key(kind, sha256)
        reader = _HashingReader(chunks)
        self.client.upload_fileobj(
            reader,
            self.bucket,
            key,
            ExtraArgs={"Metadata": {"sha256": sha256}},
            Config=self.transfer_config,
        )
        try:
            check_digest(kind, sha256, reader.digest.hexdigest(), reader.size)
        except Exception:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise
        return reader.size

    def exists(self, kind: str, sha256: str) -> bool:
        try:
            self.size(kind, sha256)
        except BlobMissing:
            return False
        return True

    def size(self, kind: str, sha256: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(kind, sha256))
        except ClientError as err:
            if _is_missing(err):
                raise BlobMissing(f"the store holds no {kind} {sha256}") from err
            raise
        return int(head["ContentLength"])

    def delete(self, kind: str, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(kind, sha256))

    def iter_objects(self, kind: str) -> Iterator[tuple[str, float]]:
        prefix = self.key(kind, "0" * 64)[:-64]
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if len(name) == 64:
                    yield name, item["LastModified"].timestamp()

    def _read(self, kind: str, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return iter(())
        span = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key(kind, sha256), Range=span
            )
        except ClientError as err:
            if _is_missing(err):
                raise BlobMissing(f"the store holds no {kind} {sha256}") from err
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                return iter(())  # an empty object has no byte 0
            raise
        return response["Body"].iter_chunks(1 << 20)
