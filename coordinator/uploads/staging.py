"""Bodies on their way to the blob store: streamed from the request to a staging file, hashed as
they go, never held in memory. One file per upload session (`<id>.part`) or per single-request
upload (`put-<random>.tmp`), under the coordinator's upload directory.

An append holds an exclusive flock on its session's file (processes of one host share the
directory), so two requests can never interleave their bytes; bytes past the session's
committed count are scratch, cut off before the next append.
"""

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from coordinator.blobstore.base import iter_file
from coordinator.blobstore.filesystem import make_directory
from coordinator.errors import InvalidState, PayloadTooLarge
from protocol.errors import InvalidInput

if TYPE_CHECKING:
    from coordinator.uploads.digests import RunningDigest

WRITE_BATCH = 1 << 20  # bytes gathered from the request before one write to disk


def get_session_path(upload_dir: Path, session_id: str) -> Path:
    return upload_dir / f"{session_id}.part"


@contextlib.contextmanager
def open_staged(path: Path) -> Iterator:
    """The staging file, created if need be, opened read-write under an exclusive flock; a
    second request on the same file gets 409 instead of waiting behind a slow upload."""
    make_directory(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise InvalidState("another request is writing to this upload; retry later") from err
        yield handle


@contextlib.contextmanager
def temporary_staged(upload_dir: Path) -> Iterator[tuple[Path, object]]:
    """A fresh staging file for a single-request upload, removed on exit."""
    path = upload_dir / f"put-{secrets.token_hex(16)}.tmp"
    try:
        with open_staged(path) as handle:
            yield path, handle
    finally:
        path.unlink(missing_ok=True)


def _write(handle, digest, data: bytes) -> None:
    handle.write(data)
    digest.update(data)


async def receive_body(
    request: Request, handle, limit: int, running: "RunningDigest | None" = None
) -> tuple[str, int]:
    """Append the request body to `handle` (at its position), refusing it once it passes
    `limit` bytes; returns the body's hex SHA-256 and length. Worker threads hash and write each
    megabyte (and feed `running`, a session's own hashes) while the event loop receives the
    next: hashing releases the GIL, so the upload is not stalled behind its own hashing."""
    digest, count, batch = hashlib.sha256(), 0, bytearray()
    working: list[asyncio.Future] = []  # the previous megabyte, being hashed and written
    loop = asyncio.get_running_loop()

    def hand_over(data: bytes) -> list[asyncio.Future]:
        jobs = [loop.run_in_executor(None, _write, handle, digest, data)]
        if running is not None:
            jobs.append(loop.run_in_executor(None, running.update, data))
        return jobs

    try:
        async for chunk in request.stream():
            count += len(chunk)
            if count > limit:
                raise PayloadTooLarge(f"the body is longer than the {limit} bytes it may have")
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                await asyncio.gather(*working)
                working = hand_over(bytes(batch))
                batch.clear()
    except ClientDisconnect as err:
        raise InvalidInput("the request body ended early: the client went away", "body") from err
    finally:  # never leave a write running on a handle the caller closes
        await asyncio.gather(*working)
    await asyncio.gather(*hand_over(bytes(batch)))
    await run_in_threadpool(handle.flush)
    return digest.hexdigest(), count


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse before reading when Content-Length already says the body is too long."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is longer than the {limit} bytes it may have")


def compute_file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in iter_file(path):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
