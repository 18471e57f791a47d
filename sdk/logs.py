"""Logs of the long-running commands (`coordinator serve`, `solver run`, `verifier run`): one
event per line, as text (the default, for people) or JSON (`--log-format json`, for a log stack).

Every line carries a time (RFC 3339, UTC), a level, an event name (stable, dotted snake_case:
`job.bid`, `assignment.committed`, `sweep.resolved`, `http.request`) and a message; the ids the
event concerns (`job_id`, `dispute_id`, `assignment_id`, `account`, ...) are fields. Call sites
pass them through the standard library's `extra=`:

    log.info("bid %d on job %s", price, job_id[:12], extra={"event": "job.bid", "job_id": job_id})

A record without an `event` gets one from its logger (uvicorn's own lines are `server.log`).
Fields that could carry a secret (keys, signatures, salts) are dropped whatever the call site
passes: a log line is never a way to leak one.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
ID_FIELDS = ("job_id", "dispute_id", "assignment_id", "account")
SECRET_FIELDS = frozenset(
    {"key", "signing_key", "private_key", "secret", "seed", "salt", "signature", "authorization"}
)
# Events of records that name none, by logger (the longest matching prefix wins).
DEFAULT_EVENTS = {
    "uvicorn": "server.log",
    "uvicorn.access": "http.request",
    "alembic": "db.migration",
    "py.warnings": "python.warning",
}
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "event",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def get_event(record: logging.LogRecord) -> str:
    event = getattr(record, "event", None)
    if isinstance(event, str) and event:
        return event
    name = record.name
    while name:
        if name in DEFAULT_EVENTS:
            return DEFAULT_EVENTS[name]
        name = name.rpartition(".")[0]
    return "log"


def get_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields, ids first, secrets left out."""
    extra = {
        k: v
        for k, v in record.__dict__.items()
        if k not in _RECORD_ATTRS and not k.startswith("_") and k.lower() not in SECRET_FIELDS
    }
    ids = {k: extra.pop(k, None) for k in ID_FIELDS}
    ids = {k: v for k, v in ids.items() if v is not None}
    return {**ids, **dict(sorted(extra.items()))}


def format_time(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2025-06-01T12:00:00.123Z."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": format_time(record.created),
            "level": record.levelname.lower(),
            "event": get_event(record),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in get_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2025-06-01T12:00:00.123Z INFO  veritrain.solver job.bid: bid 500 on job 3f2a… job_id=…`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in get_fields(record).items())
        line = (
            f"{format_time(record.created)} {record.levelname:<7} {record.name} "
            f"{get_event(record)}: {record.getMessage()}"
        )
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def get_level(level: str | int) -> int:
    """A level name as the commands take it (`info`, uvicorn's `trace` = 5) or a number."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else 5 if level.lower() == "trace" else logging.INFO


def setup_logging(log_format: str = "text", level: str | int = "info") -> logging.Handler:
    """Send every logger's records (uvicorn's included) through one stderr handler in
    `log_format`; returns the handler. Replaces handlers installed before (basicConfig's)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(get_level(level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()  # their own handlers would print in uvicorn's format
        uvicorn_logger.propagate = True
    logging.captureWarnings(True)  # `warnings` would print past the handler, unformatted
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the rest
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return handler


class ContextFilter(logging.Filter):
    """Sets fields every line of this process concerns (a daemon's `account`) on each record
    that does not carry its own."""

    def __init__(self, **fields: Any):
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def add_log_format_argument(parser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default, for people) or json (one object per line, for a log stack)",
    )
