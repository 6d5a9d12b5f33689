"""The FastAPI application: routes under /api/v1, health and metrics at the root.

The lifespan opens the database pool (closed on shutdown) and, when SLUICE_BOOTSTRAP_TOKEN is
set, makes sure that secret is a live admin token of workspace `default`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from services.api import errors
from services.api.console import docs as console_docs
from services.api.console import routes as console
from services.api.middleware import BodyLimit, Observe
from services.api.routes import (
    connections,
    events,
    health,
    instances,
    notifications,
    outputs,
    replays,
    runs,
    tokens,
    triggers,
    workflows,
    workspaces,
)
from services.api.schemas import error_responses
from shared.db import connections as connection_repo
from shared.db import tokens as token_repo
from shared.db import workspaces as workspace_repo
from shared.db.pool import Executor, create_pool
from shared.settings import Settings, SettingsError

log = structlog.get_logger("sluice.api")
API_PREFIX = "/api/v1"
BOOTSTRAP_TOKEN_NAME = "bootstrap"
DESCRIPTION = """\
Define triggers and workflows, publish them, run workflows with a trigger message, watch
instances, read logs, rerun, terminate, and ask why an event did or did not start a run.

Authenticate with `Authorization: Bearer <token>`. Tokens belong to one workspace and carry a
role: viewer < operator < developer < admin. Every error has the shape
`{"error": {"code", "message", "field"?}}`.
"""


async def ensure_bootstrap_token(conn: Executor, secret: str) -> int:
    """Create or revive the admin token of `default` whose secret is `secret`."""
    default = await workspace_repo.get(conn, "default")
    return await token_repo.ensure(conn, default.id, BOOTSTRAP_TOKEN_NAME, "admin", secret)


def create_app(settings: Settings) -> FastAPI:
    """Build the application; the database pool opens when the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            try:
                pool = await create_pool(
                    settings.database_url,
                    min_size=settings.db_pool_min,
                    max_size=settings.db_pool_max,
                    application_name="sluice-api",
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # One line saying why, before uvicorn's own startup-failure report.
                log.error("database_unreachable", error=f"{type(exc).__name__}: {exc}")
                raise
            stack.push_async_callback(pool.close)
            app.state.pool = pool
            try:
                await connection_repo.open_secrets(pool, settings)
            except SettingsError as exc:
                log.error("secret_key_invalid", error=str(exc))
                raise
            if settings.bootstrap_token is not None:
                await ensure_bootstrap_token(pool, settings.bootstrap_token.get_secret_value())
                log.info("bootstrap_token_ensured", workspace="default")
            # Move everything loaded at start-up out of the collector's sight: full collections,
            # which large pages (a 400-node instance) trigger, then scan only request garbage.
            gc.freeze()
            log.info("api_ready")
            yield
            log.info("api_stopping")

    app = FastAPI(
        title="sluice",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc are served offline by the console package (console_docs.install).
        docs_url=None,
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.settings = settings
    # Set when the server begins to stop: followed log streams end instead of holding it up.
    app.state.stopping = asyncio.Event()
    errors.install(app)
    api = APIRouter(prefix=API_PREFIX, responses=error_responses())
    for module in (workspaces, tokens, connections, triggers, workflows, runs, instances, events):
        api.include_router(module.router)
    api.include_router(outputs.router)
    api.include_router(notifications.router)
    api.include_router(replays.router)
    app.include_router(api)
    app.include_router(health.router)
    console_docs.install(app, "sluice")
    app.mount("/console/static", StaticFiles(directory=console.STATIC_DIR), name="console-static")
    app.include_router(console.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(Observe, prefix=API_PREFIX)
    return app
