"""`/`, `/jobs/{id}`, `/disputes/{id}`, `/accounts/{key}`, `/log`: the read-only dashboard.

Server-rendered Jinja2 with autoescape (every peer-supplied string is escaped), one read
transaction per page, no login (all of it is public through the API and the log). Pages reload
themselves every few seconds; unknown ids answer a 404 page. None of these routes are in the
OpenAPI schema: the API is /v1."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from coordinator.dashboard import queries
from coordinator.errors import NotFound
from coordinator.runtime import Runtime

HERE = Path(__file__).parent
REFRESH_S = 5

env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _time(value: float | None) -> str:
    if value is None:
        return ""
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # a "never" sentinel deadline
        return "—"


def _short(value: str | None, n: int = 12) -> str:
    if not value:
        return ""
    return value if len(value) <= n + 1 else value[:n] + "…"


env.filters["time"] = _time
env.filters["short"] = _short

router = APIRouter(include_in_schema=False)


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


def _page(name: str, status: int = 200, **context) -> HTMLResponse:
    html = env.get_template(name).render(refresh_s=REFRESH_S, **context)
    return HTMLResponse(html, status_code=status)


def _not_found(what: str) -> HTMLResponse:
    return _page("not_found.html", 404, title="not found", what=what)


@router.get("/")
def market(request: Request) -> HTMLResponse:
    with _rt(request).db.read() as session:
        return _page("market.html", title="market", **queries.get_market(session))


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str) -> HTMLResponse:
    if not queries.is_hex64(job_id):
        return _not_found(f"job {job_id}")
    rt = _rt(request)
    with rt.db.read() as session:
        try:
            data = queries.get_job_page(session, rt, job_id)
        except NotFound:
            return _not_found(f"job {job_id}")
        return _page("job.html", title=f"job {job_id[:12]}", **data)


@router.get("/disputes/{dispute_id}")
def dispute(request: Request, dispute_id: str) -> HTMLResponse:
    if not dispute_id.isdigit() or len(dispute_id) > 18:
        return _not_found(f"dispute {dispute_id}")
    rt = _rt(request)
    with rt.db.read() as session:
        try:
            data = queries.get_dispute_page(session, rt, int(dispute_id))
        except NotFound:
            return _not_found(f"dispute {dispute_id}")
        return _page("dispute.html", title=f"dispute {dispute_id}", **data)


@router.get("/accounts/{key}")
def account(request: Request, key: str) -> HTMLResponse:
    if not queries.is_hex64(key):
        return _not_found(f"account {key}")
    with _rt(request).db.read() as session:
        data = queries.get_account_page(session, key)
        if not data["known"]:
            return _not_found(f"account {key}")
        return _page("account.html", title=f"account {key[:12]}", **data)


@router.get("/log")
def log(request: Request, old: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
    rt = _rt(request)
    with rt.db.read() as session:
        return _page("log.html", title="log", **queries.get_log_page(session, rt, old))


@router.get("/static/dashboard.css")
def css() -> Response:
    return Response(
        (HERE / "static" / "dashboard.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "max-age=300"},
    )
