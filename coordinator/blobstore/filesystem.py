"""The embedded default: one file per blob under `root/<kind>/<sha256[:2]>/<sha256>`.

A write is atomic and durable: bytes go to a temporary file under `root/.tmp` (same filesystem),
are hashed as they are written, fsynced, checked, renamed into place, and the directory is
fsynced — so a crash leaves either no blob or the whole verified blob, never a torn one.
"""

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from coordinator.blobstore.base import BlobStore, check_address, check_digest, iter_file
from coordinator.blobstore.errors import BlobMissing


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry list changed (durable renames need it)."""
    if path.is_dir():
        return
    make_directory(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
        fsync_directory(path.parent)


class FilesystemBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, sha256: str) -> Path:
        check_address(kind, sha256)
        return self.root / kind / sha256[:2] / sha256

    def _temp_dir(self) -> Path:
        make_directory(self.root / ".tmp")
        return self.root / ".tmp"

    def put_stream(self, kind: str, sha256: str, chunks: Iterable[bytes]) -> int:
        target = self.path(kind, sha256)
        fd, name = tempfile.mkstemp(dir=self._temp_dir(), prefix="put-")
        temp = Path(name)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            check_digest(kind, sha256, digest.hexdigest(), size)
            self._install(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return size

    def put_file(self, kind: str, sha256: str, path: Path, hashed: bool = False) -> int:
        """Hash the file where it lies (unless the caller just did: `hashed`); on this
        filesystem, hard-link it into place (no copy: the caller must not change the file
        afterwards, only unlink it)."""
        target = self.path(kind, sha256)
        size = path.stat().st_size
        if not hashed:
            digest = hashlib.sha256()
            for chunk in iter_file(path):
                digest.update(chunk)
            check_digest(kind, sha256, digest.hexdigest(), size)
        if os.stat(path).st_dev != os.stat(self._temp_dir()).st_dev:
            return self.put_stream(kind, sha256, iter_file(path))
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        link = self._temp_dir() / f"link-{secrets.token_hex(8)}"
        os.link(path, link)
        try:
            self._install(link, target)  # replaces a corrupt copy too
        finally:
            link.unlink(missing_ok=True)
        return size

    def _install(self, temp: Path, target: Path) -> None:
        make_directory(target.parent)
        os.replace(temp, target)  # same bytes if it existed: content-addressed
        fsync_directory(target.parent)

    @contextlib.contextmanager
    def local_file(self, kind: str, sha256: str, scratch: Path) -> Iterator[Path]:
        """The object's own file, verified first (never written in place: a put replaces it)."""
        self.verify(kind, sha256)
        yield self.path(kind, sha256)

    def exists(self, kind: str, sha256: str) -> bool:
        return self.path(kind, sha256).is_file()

    def size(self, kind: str, sha256: str) -> int:
        try:
            return self.path(kind, sha256).stat().st_size
        except FileNotFoundError as err:
            raise BlobMissing(f"the store holds no {kind} {sha256}") from err

    def delete(self, kind: str, sha256: str) -> None:
        self.path(kind, sha256).unlink(missing_ok=True)

    def iter_objects(self, kind: str) -> Iterator[tuple[str, float]]:
        check_address(kind, "0" * 64)
        for path in sorted((self.root / kind).glob("??/*")):
            with contextlib.suppress(FileNotFoundError):  # deleted while we walked
                if len(path.name) == 64 and path.name.startswith(path.parent.name):
                    yield path.name, path.stat().st_mtime

    def delete_stale_temporaries(self, before: float) -> int:
        temp, deleted = self.root / ".tmp", 0
        if not temp.is_dir():
            return 0
        for path in temp.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another GC got there first
                if path.stat().st_mtime < before:
                    path.unlink()
                    deleted += 1
        return deleted

    def _read(self, kind: str, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        path = self.path(kind, sha256)
        if not path.is_file():
            raise BlobMissing(f"the store holds no {kind} {sha256}")
        return iter_file(path, start, end)
