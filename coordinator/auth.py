"""Signed requests: who sent it, that nobody altered it, and that it is not a replay.

The signature check runs as a FastAPI dependency (before any database work). Nonce consumption
and idempotency run inside the request's own write transaction (`execute_signed`), so the happy
path costs one transaction; a request that fails still burns its nonce in a short second one.
"""

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import bindparam, delete, select, text
from sqlalchemy import insert as insert_record
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from coordinator.errors import IdempotencyKeyReused, NonceReused, Unauthenticated
from coordinator.models import IdempotencyRecord, Nonce
from coordinator.runtime import Runtime
from protocol.errors import VeritrainError
from protocol.signing import DOMAIN_REQUEST, is_valid_signature
from protocol.wire import (
    HEADER_IDEMPOTENCY,
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    UNSIGNED_PAYLOAD,
    compute_request_message_for_digest,
)

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
HEX_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "¹²³"


@dataclass(frozen=True)
class SignedRequest:
    public_key: str  # lowercase hex
    nonce: str
    timestamp: int
    idempotency_key: str | None
    request_hash: str  # identifies "the same request" across retries (no nonce, no time)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _target(request: Request) -> str:
    target = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return (target + b"?" + query if query else target).decode("latin-1")


def _parse_headers(
    key: str | None, timestamp: str | None, nonce: str | None, signature: str | None
) -> tuple[bytes, int, bytes]:
    if not (key and timestamp and nonce and signature):
        raise Unauthenticated(
            "request must be signed: X-Veritrain-Key, -Timestamp, -Nonce and "
            "-Signature headers are required"
        )
    if not HEX_KEY_RE.match(key):
        raise Unauthenticated("X-Veritrain-Key must be 64 lowercase hex digits", "X-Veritrain-Key")
    if not TIMESTAMP_RE.fullmatch(timestamp):
        raise Unauthenticated("must be integer Unix seconds", "X-Veritrain-Timestamp")
    if not NONCE_RE.match(nonce):
        raise Unauthenticated("must be 16-64 characters of [A-Za-z0-9_-]", "X-Veritrain-Nonce")
    try:
        sig = bytes.fromhex(signature)
    except ValueError as err:
        raise Unauthenticated("must be hex", "X-Veritrain-Signature") from err
    return bytes.fromhex(key), int(timestamp), sig


async def get_signed_request(
    request: Request,
    key: Annotated[str | None, Header(alias=HEADER_KEY)] = None,
    timestamp: Annotated[str | None, Header(alias=HEADER_TIMESTAMP)] = None,
    nonce: Annotated[str | None, Header(alias=HEADER_NONCE)] = None,
    signature: Annotated[str | None, Header(alias=HEADER_SIGNATURE)] = None,
    idempotency_key: Annotated[str | None, Header(alias=HEADER_IDEMPOTENCY)] = None,
) -> SignedRequest:
    """Every signed write: fresh, well-formed headers, then the signature over the body's hash
    (one path with streamed bodies). The parameters declare the headers in the API schema."""
    check_signed_headers(request)
    body = await request.body()
    return get_streamed_signed_request(request, hashlib.sha256(body).hexdigest())


Signed = Annotated[SignedRequest, Depends(get_signed_request)]


def check_signed_headers(request: Request) -> None:
    """Before a streamed body is read: the signing headers are present, well-formed and fresh
    (the signature itself can only be checked once the body has been hashed)."""
    headers = request.headers
    _parse_headers(
        headers.get(HEADER_KEY),
        headers.get(HEADER_TIMESTAMP),
        headers.get(HEADER_NONCE),
        headers.get(HEADER_SIGNATURE),
    )
    skew = get_runtime(request).settings.request_max_skew_s
    if abs(time.time() - int(headers[HEADER_TIMESTAMP])) > skew:
        raise Unauthenticated(
            f"timestamp is more than {skew}s from the server's clock", HEADER_TIMESTAMP
        )


def get_streamed_signed_request(request: Request, body_sha256: str) -> SignedRequest:
    """The same checks as `get_signed_request` for a body that was streamed (to disk) and hashed
    on the way, rather than read into memory: the signature covers hex SHA-256 of the body."""
    headers = request.headers
    key, nonce = headers.get(HEADER_KEY), headers.get(HEADER_NONCE)
    idempotency_key = headers.get(HEADER_IDEMPOTENCY)
    public_key, ts, sig = _parse_headers(
        key, headers.get(HEADER_TIMESTAMP), nonce, headers.get(HEADER_SIGNATURE)
    )
    if idempotency_key is not None and not IDEMPOTENCY_RE.match(idempotency_key):
        raise Unauthenticated("must be 1-128 printable ASCII characters", HEADER_IDEMPOTENCY)
    target = _target(request)
    message = compute_request_message_for_digest(
        request.method, target, body_sha256, ts, nonce, idempotency_key or ""
    )
    if not is_valid_signature(public_key, DOMAIN_REQUEST, message, sig):
        raise Unauthenticated("signature does not match the request", HEADER_SIGNATURE)
    get_runtime(request).rate_limiter.take(key, time.monotonic())
    body = body_sha256.encode() if body_sha256 == UNSIGNED_PAYLOAD else bytes.fromhex(body_sha256)
    request_hash = hashlib.sha256(
        b"\n".join([request.method.encode(), target.encode(), body])
    ).hexdigest()
    return SignedRequest(key, nonce, ts, idempotency_key, request_hash)


def get_unsigned_payload_request(request: Request) -> SignedRequest | None:
    """The request, when its signature covers UNSIGNED_PAYLOAD instead of its body's digest
    (an upload part: checked before its body is read); None when it covers something else."""
    try:
        return get_streamed_signed_request(request, UNSIGNED_PAYLOAD)
    except Unauthenticated:
        return None


# RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING through SQLAlchemy.
NONCE_INSERT = {
    name: insert(Nonce.__table__).on_conflict_do_nothing().returning(Nonce.__table__.c.nonce)
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_IDEMPOTENCY = IdempotencyRecord.__table__
IDEMPOTENCY_SELECT = select(
    _IDEMPOTENCY.c.request_hash, _IDEMPOTENCY.c.status_code, _IDEMPOTENCY.c.response_body
).where(_IDEMPOTENCY.c.public_key == bindparam("pk"), _IDEMPOTENCY.c.key == bindparam("key"))
IDEMPOTENCY_INSERT = insert_record(_IDEMPOTENCY)


def _consume_nonce(session: Session, rt: Runtime, signed: SignedRequest) -> None:
    """Insert the nonce; a conflict means this exact request was seen before."""
    expires = signed.timestamp + rt.settings.request_max_skew_s + 1
    params = {"public_key": signed.public_key, "nonce": signed.nonce, "expires_at": expires}
    inserted = session.connection().execute(NONCE_INSERT[session.bind.dialect.name], params).first()
    if inserted is None:
        raise NonceReused("this nonce was already used: the request is a replay", HEADER_NONCE)


# PostgreSQL: the nonce insert and the idempotency lookup in one round trip (hot path).
PG_NONCE_AND_RECORD = text("""
WITH fresh AS (INSERT INTO nonces (public_key, nonce, expires_at)
               VALUES (:public_key, :nonce, :expires_at) ON CONFLICT DO NOTHING RETURNING nonce)
SELECT (SELECT count(*) FROM fresh) AS fresh, r.request_hash, r.status_code, r.response_body
FROM (SELECT 1) AS one
LEFT JOIN idempotency_records AS r ON r.public_key = :public_key AND r.key = :key
""")


def _consume_nonce_and_find_response(session: Session, rt: Runtime, signed: SignedRequest):
    """Burn the nonce (a conflict means a replay), then return the stored first response of this
    idempotency key, if any."""
    if session.bind.dialect.name != "postgresql":
        _consume_nonce(session, rt, signed)
        return _stored_response(session, signed)
    row = (
        session.connection()
        .execute(
            PG_NONCE_AND_RECORD,
            {
                "public_key": signed.public_key,
                "nonce": signed.nonce,
                "key": signed.idempotency_key,
                "expires_at": signed.timestamp + rt.settings.request_max_skew_s + 1,
            },
        )
        .one()
    )
    if not row.fresh:
        raise NonceReused("this nonce was already used: the request is a replay", HEADER_NONCE)
    return _checked_record(signed, row if row.request_hash is not None else None)


def _stored_response(session: Session, signed: SignedRequest):
    if signed.idempotency_key is None:
        return None
    record = (
        session.connection()
        .execute(IDEMPOTENCY_SELECT, {"pk": signed.public_key, "key": signed.idempotency_key})
        .first()
    )
    return _checked_record(signed, record)


def _checked_record(signed: SignedRequest, record):
    if record is not None and record.request_hash != signed.request_hash:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different request", HEADER_IDEMPOTENCY
        )
    return record


def _encode(result: Any) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json()  # pydantic's Rust encoder: the hot path
    return json.dumps(jsonable_encoder(result), separators=(",", ":"))


def execute_signed(
    rt: Runtime, signed: SignedRequest, fn: Callable[[Session], Any], status_code: int = 200
) -> Response:
    """Run `fn` once per idempotency key, in one transaction with the nonce check."""

    def transaction(session: Session) -> tuple[int, str, bool]:
        record = _consume_nonce_and_find_response(session, rt, signed)
        if record is not None:
            return record.status_code, record.response_body, True
        body = _encode(fn(session))
        if signed.idempotency_key is not None:
            session.connection().execute(
                IDEMPOTENCY_INSERT,
                {
                    "public_key": signed.public_key,
                    "key": signed.idempotency_key,
                    "request_hash": signed.request_hash,
                    "status_code": status_code,
                    "response_body": body,
                    "created_at": time.time(),
                },
            )
        return status_code, body, False

    try:
        status, body, replayed = rt.db.write(transaction)
    except VeritrainError as error:
        if not isinstance(error, NonceReused):
            _burn_nonce(rt, signed)
        raise
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        content=body, status_code=status, headers=headers, media_type="application/json"
    )


def call_burning_nonce_on_error(
    rt: Runtime, signed: SignedRequest, fn: Callable[..., Any], *args: Any
) -> Any:
    """Run `fn(*args)`, work done before `execute_signed` (decoding a body outside the write
    transaction). If it fails the nonce is burnt all the same, and a replay of the request
    answers nonce_reused rather than failing the same way again."""
    try:
        return fn(*args)
    except VeritrainError:
        _burn_nonce_or_refuse_replay(rt, signed)
        raise


def _burn_nonce_or_refuse_replay(rt: Runtime, signed: SignedRequest) -> None:
    def transaction(session: Session) -> None:
        _consume_nonce(session, rt, signed)

    try:
        rt.db.write(transaction)
    except NonceReused:
        raise
    except VeritrainError:
        pass  # best effort: the timestamp window still bounds any replay


def _burn_nonce(rt: Runtime, signed: SignedRequest) -> None:
    def transaction(session: Session) -> None:
        with contextlib.suppress(NonceReused):
            _consume_nonce(session, rt, signed)

    # best effort: the timestamp window still bounds any replay of a failed request
    with contextlib.suppress(VeritrainError):
        rt.db.write(transaction)


def process_expired_nonces(session: Session, now: float) -> int:
    result = session.execute(delete(Nonce).where(Nonce.expires_at < now))
    return result.rowcount or 0
