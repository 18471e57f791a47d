"""The one place that turns exceptions into HTTP statuses: RFC 9457 problem+json responses."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from coordinator import errors
from protocol.errors import (
    InternalError,
    InvalidInput,
    PartyFault,
    ProfileMismatch,
    VeritrainError,
)

PROBLEM_TYPE = "application/problem+json"
log = logging.getLogger("veritrain.coordinator")
CLOSE = {"Connection": "close"}
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}

# Most specific class first: the first isinstance match decides.
STATUS_BY_ERROR: list[tuple[type[VeritrainError], int]] = [
    (errors.Unauthenticated, 401),
    (errors.NonceReused, 409),
    (errors.IdempotencyKeyReused, 422),
    (errors.PayloadTooLarge, 413),
    (errors.RangeNotSatisfiable, 416),
    (InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Forbidden, 403),
    (errors.InvalidState, 409),
    (errors.InsufficientFunds, 409),
    (errors.RateLimited, 429),
    (errors.WriteConflict, 503),
    (errors.ReceiverBusy, 503),
    (ProfileMismatch, 409),
    (PartyFault, 409),
    (InternalError, 500),
    (VeritrainError, 500),
]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


def get_status(error: VeritrainError) -> int:
    return next(status for cls, status in STATUS_BY_ERROR if isinstance(error, cls))


def problem_response(
    status: int,
    code: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:veritrain:problem:{code}",
        title=code.replace("_", " "),
        status=status,
        detail=detail,
        code=code,
        field=field,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers=headers,
    )


def _from_veritrain(request: Request, error: VeritrainError) -> JSONResponse:
    status = get_status(error)
    if status >= 500:
        log.error("internal error on %s %s: %s", request.method, request.url.path, error)
    headers = _error_headers(error, status)
    return problem_response(status, error.code, str(error), getattr(error, "field", None), headers)


def _error_headers(error: VeritrainError, status: int) -> dict[str, str] | None:
    if isinstance(error, errors.RateLimited):
        return {"Retry-After": str(error.retry_after_s)}
    if isinstance(error, errors.RangeNotSatisfiable):
        return {"Content-Range": f"bytes */{error.size}"}  # RFC 9110 §15.5.17
    if status == 503:
        return {"Retry-After": "1"}
    return CLOSE if status >= 500 else None


def _from_validation(_request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return problem_response(422, "invalid_input", first.get("msg", "invalid request"), field)


def _allowed_methods(request: Request) -> str | None:
    """The methods the schema lists at this path. Starlette's own `Allow` names only the first
    route that matched the path: `PUT` alone where `GET` is served there too."""
    paths = request.app.openapi().get("paths", {})
    matching = [t for t in paths if compile_path(t)[0].match(request.scope["path"])]
    if not matching:
        return None
    # OpenAPI: a concrete path wins over a templated one (/accounts/transfer, /accounts/{key})
    item = paths[min(matching, key=lambda template: template.count("{"))]
    return ", ".join(sorted(method.upper() for method in item if method.upper() in HTTP_METHODS))


def _from_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if (
        error.status_code == 400
    ):  # FastAPI's "error parsing the body": a malformed body, like any other
        return problem_response(422, "invalid_input", str(error.detail))
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    # keep Starlette's own headers: a 405 carries `Allow` (RFC 9110 §15.5.6), listing every
    # method of the resource
    headers = dict(getattr(error, "headers", None) or {})
    if error.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem_response(error.status_code, code, str(error.detail), headers=headers or None)


def _from_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    # the server error middleware drops the connection after this, so say so
    return problem_response(500, "internal_error", "internal error", headers=CLOSE)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VeritrainError, _from_veritrain)
    app.add_exception_handler(RequestValidationError, _from_validation)
    app.add_exception_handler(StarletteHTTPException, _from_http)
    app.add_exception_handler(Exception, _from_unexpected)


def _problem_doc(description: str) -> dict:
    return {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


READ_PROBLEMS = {404: _problem_doc("not found"), 422: _problem_doc("invalid input")}
# a download: 409 blob_corrupt (stored bytes fail their hash), 416 for a bad Range header
DOWNLOAD_PROBLEMS = {
    **READ_PROBLEMS,
    409: _problem_doc("the stored bytes fail their SHA-256 check: refused"),
    416: _problem_doc("malformed or unsatisfiable Range header"),
}
WRITE_PROBLEMS = {
    **READ_PROBLEMS,
    401: _problem_doc("missing, stale or invalid request signature"),
    403: _problem_doc("not allowed for this account"),
    409: _problem_doc("replayed nonce, wrong state, insufficient funds or a quota reached"),
    413: _problem_doc("body too large"),
    429: _problem_doc("too many signed requests from this key; see Retry-After"),
    503: _problem_doc("write conflict; retry"),
}
