"""receive_body, the pipelined path of every upload body to its staging file: every byte written
and hashed in order, and a failure on any worker thread surfaces instead of a short file."""

import asyncio
import hashlib
import io
import os
import threading

import pytest
from starlette.requests import Request

from coordinator.errors import PayloadTooLarge, ReceiverBusy
from coordinator.models import BLOB_DATASET
from coordinator.uploads import staging
from coordinator.uploads.digests import RunningDigest


def _request(pieces: list[bytes]) -> Request:
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> dict:
        return messages.pop(0)

    return Request({"type": "http", "method": "PUT", "headers": []}, receive)


def _pieces(total: int, seed: int) -> list[bytes]:
    """Odd-sized pieces, so batches straddle piece boundaries."""
    data = hashlib.shake_256(seed.to_bytes(4, "big")).digest(total)
    sizes = [1, 70_000, 333_333, 1 << 20, 5]
    pieces, offset, turn = [], 0, 0
    while offset < total:
        size = sizes[turn % len(sizes)]
        pieces.append(data[offset : offset + size])
        offset, turn = offset + size, turn + 1
    return pieces


def test_every_byte_is_written_and_hashed_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "SYNC_EVERY", 1 << 20)  # background syncs happen mid-body
    pieces = _pieces(9 * (1 << 20) + 12345, seed=1)
    body = b"".join(pieces)
    running = RunningDigest(BLOB_DATASET, len(body))
    with open(tmp_path / "staged", "wb+") as handle:
        sha, count = asyncio.run(
            staging.receive_body(_request(pieces), handle, len(body), _slots(), running)
        )
    assert (sha, count) == (hashlib.sha256(body).hexdigest(), len(body))
    assert (tmp_path / "staged").read_bytes() == body
    assert running.sha256_hex() == sha


def test_a_body_past_its_limit_is_refused(tmp_path):
    pieces = _pieces(3 << 20, seed=2)
    with open(tmp_path / "staged", "wb+") as handle, pytest.raises(PayloadTooLarge):
        asyncio.run(staging.receive_body(_request(pieces), handle, (3 << 20) - 1, _slots()))


class _FailingDisk(io.RawIOBase):
    """A disk that fills up after `room` bytes."""

    def __init__(self, room: int):
        self.room, self.written = room, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.written + len(data) > self.room:
            raise OSError(28, os.strerror(28))
        self.written += len(data)
        return len(data)

    def fileno(self) -> int:
        raise OSError("no descriptor")


def test_a_write_that_fails_on_a_worker_thread_fails_the_request(monkeypatch):
    monkeypatch.setattr(staging, "SYNC_EVERY", 1 << 40)  # the fake disk has no descriptor
    pieces = _pieces(6 << 20, seed=3)
    disk, slots = _FailingDisk(room=2 << 20), _slots()
    with pytest.raises(OSError, match=os.strerror(28)):
        asyncio.run(staging.receive_body(_request(pieces), disk, 6 << 20, slots))
    assert disk.written <= 2 << 20
    assert slots.acquire(blocking=False)  # the failed request gave its slot back


def test_no_body_is_read_while_every_slot_is_taken(tmp_path):
    slots = _slots()
    slots.acquire()
    request = _request(_pieces(1 << 20, seed=4))
    with open(tmp_path / "staged", "wb+") as handle, pytest.raises(ReceiverBusy):
        asyncio.run(staging.receive_body(request, handle, 1 << 20, slots))
    assert (tmp_path / "staged").stat().st_size == 0


def _slots() -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(1)
