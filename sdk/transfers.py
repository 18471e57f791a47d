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
from pathlib import Path

READ_CHUNK = 1 << 20
DEFAULT_PART_SIZE = 128 * 1024 * 1024  # one signed PUT; a failure re-sends at most this much


def compute_file_sha256(path: Path, start: int = 0, length: int | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in iter_file_range(path, start, length):
        digest.update(chunk)
    return digest.hexdigest()


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
