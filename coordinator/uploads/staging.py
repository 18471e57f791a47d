"""Bodies on their way to the blob store: streamed from the request to a staging file, hashed as
they go, never held in memory. One file per upload session (`<id>.part`) or per single-request
upload (`put-<random>.tmp`), under the coordinator's upload directory.

An append holds an exclusive flock on its session's file (processes of one host share the
directory), so two requests can never interleave their bytes; bytes past the session's
committed count are scratch, cut off before the next append.
"""

import asyncio
import collections
import contextlib
import fcntl
import functools
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from coordinator.blobstore.base import iter_file
from coordinator.blobstore.filesystem import make_directory
from coordinator.errors import InvalidState, PayloadTooLarge, ReceiverBusy
from protocol.errors import InvalidInput

if TYPE_CHECKING:
    from coordinator.uploads.digests import RunningDigest

WRITE_BATCH = 1 << 20  # bytes gathered from the request before one write to disk
PIPELINE_DEPTH = 4  # batches received ahead of their hashing and writing, per thread
SYNC_EVERY = 8 << 20  # bytes written between two background fdatasyncs


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
    if digest is not None:
        digest.update(data)


class _Pipeline:
    """Ordered work on one thread, at most `depth` pieces behind the caller: the event loop goes
    on receiving while the previous megabytes are hashed and written (uvicorn stops reading the
    socket while its small buffer is full, so waiting on each megabyte in turn stalls the
    sender)."""

    def __init__(self, depth: int):
        self.pool = ThreadPoolExecutor(1)
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.depth = depth

    async def submit(self, work, *args) -> None:
        self.pending.append(asyncio.wrap_future(self.pool.submit(work, *args)))
        while len(self.pending) > self.depth or (self.pending and self.pending[0].done()):
            await self.pending.popleft()

    def is_idle(self) -> bool:
        return all(future.done() for future in self.pending)

    async def close(self) -> BaseException | None:
        """Wait for all pending work (never leave a write running on a handle the caller
        closes); the first error it raised, if any."""
        results = await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()
        self.pool.shutdown(wait=False)  # idle now: its thread exits by itself
        return next((r for r in results if isinstance(r, BaseException)), None)


async def receive_body(
    request: Request,
    handle,
    limit: int,
    slots: threading.BoundedSemaphore,
    running: "RunningDigest | None" = None,
    hashed: bool = True,
) -> tuple[str | None, int]:
    """Append the request body to `handle` (at its position), refusing it once it passes
    `limit` bytes; returns the body's hex SHA-256 and length. One thread hashes and writes each
    megabyte and one per hash of `running` (a session's own) feeds it, while the event loop
    receives the next ones: hashing releases the GIL, so the upload is not stalled behind it.
    Holds one of `slots` (the replica's bodies in flight) or refuses the request. Unless
    `hashed`, the body's own SHA-256 is not taken (None): a part signed over UNSIGNED_PAYLOAD."""
    if not slots.acquire(blocking=False):
        raise ReceiverBusy("this replica is receiving as many uploads as it may; retry shortly")
    try:
        return await _receive_body(request, handle, limit, running, hashed)
    finally:
        slots.release()


async def _receive_body(
    request: Request, handle, limit: int, running: "RunningDigest | None", hashed: bool
) -> tuple[str | None, int]:
    digest, count, batch, unsynced = hashlib.sha256() if hashed else None, 0, bytearray(), 0
    syncing = _Pipeline(1)
    updaters = [functools.partial(_write, handle, digest)]
    updaters += running.get_updaters() if running is not None else []
    pipelines = [_Pipeline(PIPELINE_DEPTH) for _ in updaters]

    async def hand_over(data: bytes) -> None:
        nonlocal unsynced
        for pipeline, updater in zip(pipelines, updaters, strict=True):
            await pipeline.submit(updater, data)
        unsynced += len(data)
        if unsynced >= SYNC_EVERY and syncing.is_idle():  # the final fsync waits for less
            await syncing.submit(os.fdatasync, handle.fileno())
            unsynced = 0

    try:
        async for chunk in request.stream():
            count += len(chunk)
            if count > limit:
                raise PayloadTooLarge(f"the body is longer than the {limit} bytes it may have")
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                await hand_over(batch)
                batch = bytearray()  # the workers own the last one now
        await hand_over(batch)
    except ClientDisconnect as err:
        raise InvalidInput("the request body ended early: the client went away", "body") from err
    finally:
        errors = [await pipeline.close() for pipeline in [*pipelines, syncing]]
    failure = next((error for error in errors if error is not None), None)
    if failure is not None:
        raise failure
    await run_in_threadpool(handle.flush)
    return (digest.hexdigest() if digest is not None else None), count


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
