"""Hashes of an upload session's committed bytes, kept as its parts arrive, so its commit need
not read a multi-gigabyte staged file again: the SHA-256 and, for states, the Merkle leaves.

Per replica, in memory, and only an optimisation: a part received by another replica, a restart,
or an eviction leaves a session without one, and its commit reads the file as before. A part is
hashed into a copy that replaces the session's only once the part is counted, so bytes that are
refused (a bad signature, a dropped connection) never reach it.
"""

import hashlib
import threading
from collections import OrderedDict

from coordinator.models import BLOB_DATASET
from protocol.errors import CheckpointCorrupt
from protocol.state_stream import StateStreamHasher, StreamedFile

MAX_RUNNING = 64  # sessions whose hashes a replica keeps (each holds one leaf list)


class RunningDigest:
    def __init__(self, kind: str, size: int):
        self.size, self.offset, self.broken = size, 0, False
        self.sha256 = hashlib.sha256()
        self.state = None if kind == BLOB_DATASET else StateStreamHasher(size)

    def copy(self) -> "RunningDigest":
        twin = RunningDigest.__new__(RunningDigest)
        twin.size, twin.offset, twin.broken = self.size, self.offset, self.broken
        twin.sha256 = self.sha256.copy()
        twin.state = self.state.copy() if self.state is not None else None
        return twin

    def get_updaters(self) -> list:
        """Each takes every byte in order; they may run on separate threads (hashlib frees the
        GIL), so a state's two hashes cost the upload no more time than one."""
        return (
            [self._update_sha256]
            if self.state is None
            else [self._update_sha256, self._update_state]
        )

    def update(self, data: bytes) -> None:
        for updater in self.get_updaters():
            updater(data)

    def _update_sha256(self, data: bytes) -> None:
        self.sha256.update(data)
        self.offset += len(data)

    def _update_state(self, data: bytes) -> None:
        if not self.broken:
            try:
                self.state.update(data)
            except CheckpointCorrupt:  # not a state: the commit reads the file and says why
                self.broken = True

    def result(self) -> StreamedFile | None:
        """The complete session's hashes, or None when the commit must read the file."""
        if self.broken or self.offset != self.size or self.state is None:
            return None
        try:
            return StreamedFile(self.sha256.hexdigest(), self.size, self.state.finish())
        except CheckpointCorrupt:
            return None

    def sha256_hex(self) -> str | None:
        return self.sha256.hexdigest() if self.offset == self.size else None


class RunningDigests:
    """upload id → its RunningDigest, at most MAX_RUNNING (least recently used dropped)."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, RunningDigest] = OrderedDict()
        self.lock = threading.Lock()

    def begin(self, upload_id: str, kind: str, size: int, offset: int) -> RunningDigest | None:
        """A digest to feed a part at `offset`: a copy of the session's, or a fresh one for its
        first part; None when this replica has not seen the bytes before `offset`."""
        with self.lock:
            known = self.items.get(upload_id)
        if known is not None and known.offset == offset:
            return known.copy()
        return RunningDigest(kind, size) if offset == 0 else None

    def keep(self, upload_id: str, digest: RunningDigest | None) -> None:
        """The part was counted: its digest becomes the session's."""
        with self.lock:
            if digest is None:
                self.items.pop(upload_id, None)
                return
            self.items[upload_id] = digest
            self.items.move_to_end(upload_id)
            while len(self.items) > MAX_RUNNING:
                self.items.popitem(last=False)

    def take(self, upload_id: str) -> RunningDigest | None:
        with self.lock:
            return self.items.pop(upload_id, None)
