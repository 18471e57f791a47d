"""Streaming file transfers for the client: files are hashed and sent from disk, and received
to disk, a bounded piece at a time, so no process holds a whole state or dataset because of I/O.

Uploads are resumable: a part that fails leaves the session at its last committed offset, which
the next attempt (in this process or another: declaring the same upload again finds the open
session) reads back and continues from. Downloads resume from a `<name>.part` file with an HTTP
Range request and are checked against the expected SHA-256 before the file is moved into place.
"""

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

READ_CHUNK = 1 << 20
DEFAULT_PART_SIZE = 128 * 1024 * 1024  # one signed PUT; a failure re-sends at most this much


def compute_file_sha256(path: Path, start: int = 0, length: int | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in iter_file_range(path, start, length):
        digest.update(chunk)
    return digest.hexdigest()


class PartDigests:
    """Each part's SHA-256, which an upload signs part by part: the next part's is hashed on a
    thread while the current one is sent (hashlib frees the GIL), so an upload whose file hash
    is known starts at once and never waits on a hash after its first part."""

    def __init__(self, path: Path, part_size: int):
        self.path, self.part_size = path, part_size
        self.pool = ThreadPoolExecutor(1)
        self.ahead: dict[tuple[int, int], Future] = {}

    def get(self, offset: int, length: int) -> str:
        """The digest of the `length` bytes at `offset`; starts hashing the part after it."""
        found = self.ahead.pop((offset, length), None)
        digest = (
            found.result() if found is not None else compute_file_sha256(self.path, offset, length)
        )
        size = self.path.stat().st_size
        after = offset + length
        if after < size:
            following = (after, min(self.part_size, size - after))
            self.ahead[following] = self.pool.submit(compute_file_sha256, self.path, *following)
        return digest

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def iter_file_range(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = length
        while left is None or left > 0:
            chunk = handle.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


def get_partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def finish_download(partial: Path, path: Path, sha256: str) -> bool:
    """Move the complete `.part` file into place if it hashes to `sha256`; else delete it (a
    resumed download that went wrong starts again) and say so."""
    if compute_file_sha256(partial) != sha256:
        partial.unlink(missing_ok=True)
        return False
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return True
