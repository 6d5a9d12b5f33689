"""Liveness, readiness and Prometheus metrics (unauthenticated, outside /api/v1)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import get_pool
from services.api.schemas import Health
from shared import metrics as shared_metrics
from shared.db.migrate import is_current
from shared.db.queries import load

Q = load(__file__)
log = structlog.get_logger("sluice.api")
router = APIRouter(tags=["health"])
_READY_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "a dependency is not ready"}},
)
async def readyz(request: Request) -> Any:
    """The database answers and its schema is the one this code expects."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            async with get_pool(request).acquire() as conn:
                current = await is_current(conn)
        checks["database"] = "ok"
        checks["migrations"] = "current" if current else "pending: run `sluice migrate`"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = checks.get("database") == "ok" and checks.get("migrations") == "current"
    body = Health(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics; `sluice_instances{state}` is
    sampled from the database at scrape time."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            rows = await get_pool(request).fetch(Q["active_instances"])
        for row in rows:
            shared_metrics.INSTANCES.labels(row["state"]).set(row["n"])
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The rest of the metrics matter most when the database is in trouble: serve them.
        log.warning("instances_gauge_not_sampled", error=type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
