"""`sluice run api`: serve the HTTP API with uvicorn until `stop` is set."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI

from services.api.app import create_app
from shared.db import connections as connection_repo
from shared.db.pool import connect
from shared.probes import QuietServer
from shared.settings import Settings

log = structlog.get_logger("sluice.api")


async def _serve(server: QuietServer, sockets: list[socket.socket] | None) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exc:
        # uvicorn exits the process when the lifespan or the bind fails; make that an error of
        # this service instead, so the supervisor reports it and stops the others cleanly.
        raise RuntimeError(f"the API server could not start (uvicorn exit {exc.code})") from None
    if not server.started:
        raise RuntimeError("the API server did not start")


async def serve(
    app: FastAPI,
    settings: Settings,
    stop: asyncio.Event,
    *,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve `app` on `settings.host:api_port` (or on `sockets`) until `stop`, then drain.

    Open requests get `drain_timeout_s` to finish; followed log streams end at once.
    """
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_s)),
    )
    server = QuietServer(config, name="api")
    serving = asyncio.create_task(_serve(server, sockets))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        app.state.stopping.set()
        server.should_exit = True
        await serving
    finally:
        stopped.cancel()
        if not serving.done():
            server.force_exit = True
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
    log.info("api_stopped")


async def _check_secret_key(settings: Settings) -> None:
    """A missing or wrong SLUICE_SECRET_KEY stops the service with one line naming it (the
    SettingsError of `open_secrets`) before uvicorn starts: raised inside its lifespan, the same
    error would come with uvicorn's traceback. An unreachable database is left to the lifespan,
    which reports it."""
    settings.secret_box()  # a missing or malformed key: at once, without the database
    try:
        conn = await connect(settings.database_url, application_name="sluice-api")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return
    try:
        await connection_repo.open_secrets(conn, settings)
    finally:
        await conn.close()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """The `api` service: the HTTP API on `SLUICE_API_PORT`."""
    await _check_secret_key(settings)
    await serve(create_app(settings), settings, stop)
