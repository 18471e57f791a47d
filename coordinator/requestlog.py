"""Request logging: one `http.request` line per request (the access log, logger
`veritrain.coordinator.http`, at INFO: `coordinator serve --access-log` turns it on), and one
event per accepted or refused write (logger `veritrain.coordinator.events`): `job.bid`,
`assignment.committed`, `dispute.move`, ... with the ids it concerns as fields.

Ids come from the path (`/v1/jobs/{job_id}/bids`) and, for writes, from the JSON answer (a
dispute move answers with the dispute's job and assignment). `account` is the signer's public key
from `X-Veritrain-Key`. Nothing else of the request is logged: no body, no query string, no
signature or nonce header. Pure ASGI, so streamed checkpoint downloads are not buffered.
"""

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.routes import RouteTable

access_log = logging.getLogger("veritrain.coordinator.http")
event_log = logging.getLogger("veritrain.coordinator.events")

# (method, route template) → event: the writes worth a line of their own.
WRITE_EVENTS: dict[tuple[str, str], str] = {
    ("POST", "/v1/jobs"): "job.submitted",
    ("POST", "/v1/jobs/{job_id}/bids"): "job.bid",
    ("POST", "/v1/jobs/{job_id}/award"): "job.awarded",
    ("POST", "/v1/jobs/{job_id}/heartbeat"): "job.heartbeat",
    ("POST", "/v1/jobs/{job_id}/invalid-spec"): "job.invalid_spec",
    ("POST", "/v1/jobs/{job_id}/commitment"): "job.committed",
    ("PUT", "/v1/jobs/{job_id}/checkpoints/{index}"): "checkpoint.uploaded",
    ("POST", "/v1/jobs/{job_id}/challenges"): "assignment.challenged",
    ("POST", "/v1/verifiers"): "verifier.registered",
    ("POST", "/v1/verifiers/withdraw"): "verifier.withdrawn",
    ("POST", "/v1/assignments/{assignment_id}/commit"): "assignment.committed",
    ("POST", "/v1/assignments/{assignment_id}/reveal"): "assignment.revealed",
    ("POST", "/v1/disputes/{dispute_id}/moves"): "dispute.move",
    ("PUT", "/v1/disputes/{dispute_id}/state"): "dispute.state_uploaded",
    ("POST", "/v1/disputes/{dispute_id}/rule"): "dispute.rule",
    ("PUT", "/v1/datasets/{sha256}"): "dataset.uploaded",
    ("POST", "/v1/accounts/transfer"): "account.transfer",
    ("POST", "/v1/dev/faucet"): "account.faucet",
    ("POST", "/v1/sweep"): "sweep.requested",
    ("POST", "/v1/dev/clock"): "clock.advanced",
}
ID_PARAMS = ("job_id", "assignment_id", "dispute_id")
ANSWER_FIELDS = ("job_id", "assignment_id", "state", "phase", "status", "winner", "log_index")
MAX_ANSWER = 64 * 1024  # a write's answer bigger than this is not read for ids


def get_route_ids(params: dict[str, str]) -> dict[str, Any]:
    """The ids a request's path parameters name (ids of rows as integers)."""
    return {
        k: int(v) if k != "job_id" and v.isdigit() else v
        for k, v in params.items()
        if k in ID_PARAMS
    }


def get_answer_fields(event: str, body: bytes) -> dict[str, Any]:
    """Ids and the resulting state from a write's JSON answer (dispute and assignment views
    name themselves `id`)."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(answer, dict):
        return {}
    fields = {k: answer[k] for k in ANSWER_FIELDS if isinstance(answer.get(k), str | int)}
    if isinstance(answer.get("id"), int):
        if event.startswith("dispute."):
            fields["dispute_id"] = answer["id"]
        elif event.startswith("assignment."):
            fields["assignment_id"] = answer["id"]
    return fields


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, routes: list):
        self.app, self.routes = app, RouteTable(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        template, params = self.routes.match(method, path) or ("", {})
        event = WRITE_EVENTS.get((method, template))
        write = (event, get_route_ids(params)) if event else None
        started, status, answer = time.perf_counter(), 500, bytearray()

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and write and len(answer) < MAX_ANSWER:
                answer.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            account = _header(scope, b"x-veritrain-key")
            ids: dict[str, Any] = {**get_route_ids(params), "account": account}
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "event": "http.request",
                        **ids,
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            if write is not None:
                _log_write(write, ids, status, bytes(answer), method, path)


def _log_write(
    write: tuple[str, dict[str, Any]],
    ids: dict[str, Any],
    status: int,
    answer: bytes,
    method: str,
    path: str,
) -> None:
    event, path_ids = write
    fields = {**ids, **path_ids, **get_answer_fields(event, answer), "http_status": status}
    if 200 <= status < 300:
        event_log.info("%s %s", event, _describe(fields), extra={"event": event, **fields})
    elif 400 <= status < 500:
        fields.pop("status", None)
        code = fields.pop("code", None) or _problem_code(answer)
        event_log.info(
            "%s refused (%d %s) on %s %s",
            event,
            status,
            code,
            method,
            path,
            extra={"event": "request.refused", "action": event, "code": code, **fields},
        )


def _problem_code(answer: bytes) -> str | None:
    try:
        problem = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None
    return problem.get("code") if isinstance(problem, dict) else None


def _describe(fields: dict[str, Any]) -> str:
    parts = []
    for key in ("job_id", "assignment_id", "dispute_id"):
        if key in fields:
            value = fields[key]
            parts.append(f"{key.removesuffix('_id')} {str(value)[:12]}")
    for key in ("state", "phase", "status", "winner"):
        if key in fields:
            parts.append(f"{key} {fields[key]}")
    return ", ".join(parts) or "ok"
