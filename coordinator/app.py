"""The coordinator's FastAPI application factory."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator import system
from coordinator.accounts import endpoints as accounts
from coordinator.blobstore.legacy import export_legacy_blobs
from coordinator.clock import Clock
from coordinator.dashboard import endpoints as dashboard
from coordinator.datasets import endpoints as datasets
from coordinator.db import Database, upgrade_database
from coordinator.disputes import endpoints as disputes
from coordinator.jobs import endpoints as jobs
from coordinator.ledger import endpoints as ledger
from coordinator.limits import BodyLimitMiddleware
from coordinator.log import endpoints as log_endpoints
from coordinator.log.repository import get_log_state
from coordinator.metrics import CoordinatorMetrics, MetricsMiddleware
from coordinator.problems import Problem, install_problem_handlers
from coordinator.requestlog import RequestLogMiddleware
from coordinator.runtime import Runtime, make_clock
from coordinator.settings import Settings
from coordinator.sweeper import SweeperThread
from coordinator.uploads import endpoints as uploads
from coordinator.verification import endpoints as verification

log = logging.getLogger("veritrain.coordinator")


def _load_clock(db: Database, dev: bool) -> Clock:
    # Only a dev server honours a stored offset: production deadlines are wall-clock time.
    with db.read() as session:
        offset = get_log_state(session).clock_offset if dev else 0.0
    return make_clock(db, dev, offset)  # replicas on PostgreSQL share the stored offset


def create_runtime(settings: Settings) -> Runtime:
    key = settings.load_signing_key()
    db = Database(settings.database_url)
    upgrade_database(db.engine)
    rt = Runtime(settings=settings, db=db, key=key, clock=_load_clock(db, settings.dev))
    export_legacy_blobs(db, rt.blobs)  # rows from before revision 0007 (docs/coordinator.md)
    return rt


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: migrate the database to head, load the log key, mount every slice."""
    settings = settings or Settings()
    rt = create_runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = SweeperThread(rt) if settings.run_sweeper else None
        if sweeper:
            sweeper.start()
        yield
        if sweeper:
            sweeper.stop()
        rt.close()

    app = FastAPI(title="veritrain coordinator", version="1", lifespan=lifespan)
    app.state.runtime = rt
    install_problem_handlers(app)
    for router in (
        system.router,
        accounts.router,
        ledger.router,
        log_endpoints.router,
        jobs.router,
        verification.router,
        disputes.router,
        datasets.router,
        uploads.router,  # resumable uploads of checkpoints and datasets
        dashboard.router,  # the read-only web dashboard: /, /jobs/…, /disputes/…, /log
    ):
        app.include_router(router)
    if settings.dev:
        app.include_router(accounts.dev_router)
        app.include_router(system.dev_router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_json=settings.max_json_body,
        max_checkpoint=settings.max_checkpoint_body,
    )
    # http.request lines and one event per write
    app.add_middleware(RequestLogMiddleware, routes=app.router.routes)
    _install_metrics(app, rt)
    _register_problem_schema(app)
    return app


def _install_metrics(app: FastAPI, rt: Runtime) -> None:
    """`GET /metrics` (Prometheus text format, not in the OpenAPI schema) from this app's own
    registry; the request middleware is outermost, so refused bodies are counted too."""
    metrics = CoordinatorMetrics(rt)
    rt.metrics = metrics  # where the referee's ruling is observed (coordinator/metrics.py)

    @app.get("/metrics", include_in_schema=False)
    def get_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)


def _register_problem_schema(app: FastAPI) -> None:
    """Put the Problem schema into components so every documented 4xx can reference it."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            Problem.model_json_schema()
        )
        return schema

    app.openapi = openapi
