"""Request body size limits, enforced before any route (or FastAPI's parser) sees the body.

Pure ASGI: the body is read here up to the limit (Content-Length is checked first, chunked
bodies are counted), then replayed to the app; anything larger gets a 413 problem response.
Streamed uploads (checkpoints, dataset files, upload-session parts) are not buffered here: only
their declared Content-Length is checked, and their routes count the bytes as they stream to
disk (coordinator.uploads.staging), so no body is ever held whole in memory.
"""

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# streamed to disk by their routes, which enforce the limit as they count
STREAMED_PATH = re.compile(r"^/v1/(jobs/[^/]+/checkpoints/[^/]+|datasets/[^/]+|uploads/[^/]+)$")
# a dispute's state is buffered (the referee steps it in memory anyway): one state's worth
BUFFERED_BINARY_PATH = re.compile(r"^/v1/disputes/[^/]+/state$")
MAX_BUFFERED_BINARY = 64 * 1024 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_json: int, max_checkpoint: int):
        self.app = app
        self.max_json = max_json
        self.max_checkpoint = max_checkpoint

    def _limit(self, scope: Scope) -> int:
        if scope["method"] == "PUT" and BUFFERED_BINARY_PATH.match(scope["path"]):
            return min(self.max_checkpoint, MAX_BUFFERED_BINARY)
        return self.max_json

    def _is_streamed(self, scope: Scope) -> bool:
        return scope["method"] == "PUT" and bool(STREAMED_PATH.match(scope["path"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_checkpoint if self._is_streamed(scope) else self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reject(send, limit)
            return
        if self._is_streamed(scope):
            await self.app(scope, receive, send)
            return
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _reject(send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "urn:veritrain:problem:payload_too_large",
            "title": "payload too large",
            "status": 413,
            "code": "payload_too_large",
            "detail": f"request body exceeds {limit} bytes",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
