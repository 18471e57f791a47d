"""The one interface every backend implements, and the read-side integrity rule they share.

Addresses are (kind, SHA-256): `kind` is a namespace (checkpoint, dataset, state), so the same
bytes under two kinds are two objects and a lookup in one never sees the other.

Integrity: `put_*` refuses bytes that do not hash to the address before they become visible;
`open_range` first hashes the whole stored object (a corrupted blob is refused with BlobCorrupt
before a byte is sent), then streams the range, hashing again when it is the whole object so a
change between the two passes ends the stream with an error instead of serving bad bytes.
"""

import hashlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator.blobstore.errors import BlobCorrupt, BlobMismatch
from protocol.errors import InternalError
from sdk.transfers import iter_file_range

log = logging.getLogger("veritrain.coordinator.blobstore")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("checkpoint", "dataset", "state")


def check_address(kind: str, sha256: str) -> None:
    """Our own callers only ever pass validated addresses; anything else is a bug, not input."""
    if kind not in KINDS or not SHA256_RE.match(sha256):
        raise InternalError(f"not a blob address: {kind}/{sha256[:80]}")


def iter_file(path: Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of a file, in bounded pieces (one reader for the SDK and the store)."""
    return iter_file_range(path, start, None if end is None else end - start)


class BlobStore(ABC):
    """put_stream / put_file / open_range / exists / size / delete / iter_objects."""

    @abstractmethod
    def put_stream(self, kind: str, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store the bytes of `chunks` under `sha256`; BlobMismatch (nothing stored) when they do
        not hash to it. Returns the size. Idempotent."""

    def put_file(self, kind: str, sha256: str, path: Path, hashed: bool = False) -> int:
        """Store the content of the local file `path`, which the store may move (consume).
        `hashed`: the caller has just computed `sha256` from this file, which nothing else
        writes (a store may then skip its own pass; a streamed put checks it anyway)."""
        return self.put_stream(kind, sha256, iter_file(path))

    @abstractmethod
    def exists(self, kind: str, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, kind: str, sha256: str) -> int:
        """The stored object's size; BlobMissing when there is none."""

    @abstractmethod
    def delete(self, kind: str, sha256: str) -> None:
        """Remove the object; no error when it is already gone."""

    @abstractmethod
    def iter_objects(self, kind: str) -> Iterator[tuple[str, float]]:
        """(sha256, last-modified epoch seconds) of every stored object of `kind` (for GC)."""

    def delete_stale_temporaries(self, before: float) -> int:
        """Remove the store's own leftovers of puts that died midway, older than `before`."""
        return 0

    @abstractmethod
    def _read(self, kind: str, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        """Raw bytes [start, end) of the stored object, unchecked."""

    def verify(self, kind: str, sha256: str) -> int:
        """Hash the whole stored object; its size, or BlobCorrupt (logged) when it differs."""
        check_address(kind, sha256)
        digest, size = hashlib.sha256(), 0
        for chunk in self._read(kind, sha256, 0, None):
            digest.update(chunk)
            size += len(chunk)
        if digest.hexdigest() != sha256:
            self._report_corrupt(kind, sha256)
        return size

    def open_range(
        self, kind: str, sha256: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Bytes [start, end) of a verified object (end None: to its end)."""
        self.verify(kind, sha256)
        if start == 0 and end is None:
            return self._read_checked(kind, sha256)
        return self._read(kind, sha256, start, end)

    def _read_checked(self, kind: str, sha256: str) -> Iterator[bytes]:
        digest = hashlib.sha256()
        for chunk in self._read(kind, sha256, 0, None):
            digest.update(chunk)
            yield chunk
        if digest.hexdigest() != sha256:
            self._report_corrupt(kind, sha256)

    @contextmanager
    def local_file(self, kind: str, sha256: str, scratch: Path) -> Iterator[Path]:
        """The verified object as a local file for a worker process to read: a private copy
        streamed into `scratch`, removed afterwards (a filesystem store lends its own file)."""
        scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=scratch, prefix="blob-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in self.open_range(kind, sha256):
                    handle.write(chunk)
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def read_bytes(self, kind: str, sha256: str) -> bytes:
        """A whole verified object in memory: only for small ones (a job's dataset)."""
        return b"".join(self.open_range(kind, sha256))

    def put_bytes(self, kind: str, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        self.put_stream(kind, sha256, [data])
        return sha256

    @staticmethod
    def _report_corrupt(kind: str, sha256: str) -> None:
        log.error(
            "blob %s/%s is corrupt: its bytes no longer hash to its address; refusing to serve it",
            kind,
            sha256,
            extra={"event": "blob.corrupt", "kind": kind, "sha256": sha256},
        )
        raise BlobCorrupt(
            f"the stored {kind} {sha256} is corrupt (its bytes no longer match their SHA-256); "
            "it is refused until it is restored or uploaded again"
        )


def check_digest(kind: str, sha256: str, actual: str, size: int) -> None:
    if actual != sha256:
        raise BlobMismatch(f"the {size} bytes sent hash to {actual}, not to {kind} {sha256}")
