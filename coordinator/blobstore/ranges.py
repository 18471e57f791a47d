"""Serving a blob over HTTP: whole (200) or one byte range (206, RFC 9110 §14), streamed from
the store after its SHA-256 has been checked (coordinator.blobstore.base)."""

import re

from fastapi.responses import StreamingResponse

from coordinator.blobstore.base import BlobStore
from coordinator.errors import RangeNotSatisfiable

RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")
BINARY = "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int]:
    """[start, end) of the one range `header` asks for; RangeNotSatisfiable when it is
    malformed, names several ranges, another unit, or nothing inside the blob."""
    match = RANGE_RE.match(header.strip().replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        raise RangeNotSatisfiable(
            "Range must be one range of bytes: bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX",
            size,
        )
    first, last = match.groups()
    if first == "":  # the last `last` bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable("an empty suffix range selects no bytes", size)
        return max(0, size - int(last)), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        raise RangeNotSatisfiable(f"the range's last byte {last} is before its first {first}", size)
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at {start}; the blob has {size} bytes", size)
    return start, end


def blob_response(
    store: BlobStore, kind: str, sha256: str, range_header: str | None
) -> StreamingResponse:
    """Sync on purpose: run on the thread pool, where the integrity pass may read the whole blob."""
    size = store.size(kind, sha256)
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"'}
    if range_header is None:
        body = store.open_range(kind, sha256)
        headers["Content-Length"] = str(size)
        return StreamingResponse(body, media_type=BINARY, headers=headers)
    start, end = parse_range(range_header, size)
    body = store.open_range(kind, sha256, start, end)
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(body, status_code=206, media_type=BINARY, headers=headers)
