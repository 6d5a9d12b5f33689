"""Health, readiness and metrics for every service: `/healthz`, `/readyz`, `/metrics`.

Each `sluice run <service>` process (and `sluice dev`) serves these on `SLUICE_METRICS_PORT`.
Services report the state of their own dependencies (broker connected, webhook tokens configured)
through `READINESS`; the database and migration checks are built in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Imported for its side effect only: it registers the sluice metrics that /metrics serves.
from shared import metrics as _metrics  # noqa: F401
from shared.db.migrate import is_current
from shared.db.pool import connect

log = structlog.get_logger("sluice.probes")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Component:
    ok: bool
    detail: str


class Readiness:
    """Per-component readiness reported by the services of this process."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        previous = self._components.get(name)
        self._components[name] = Component(ok, detail)
        if previous is None or previous.ok != ok:
            log.info("readiness_changed", component=name, ok=ok, detail=detail)

    def drop(self, name: str) -> None:
        """Forget a component that no longer exists (e.g. a Kafka cluster no trigger reads)."""
        self._components.pop(name, None)

    def snapshot(self) -> dict[str, Component]:
        return dict(self._components)


# One per process, like Prometheus' default registry: services in one process share it.
READINESS = Readiness()


async def database_status(dsn: str) -> Component:
    """Database reachable and every known migration applied."""
    try:
        conn = await asyncio.wait_for(connect(dsn, "sluice-probe"), timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return Component(False, f"database unreachable: {type(exc).__name__}")
    try:
        if not await is_current(conn):
            return Component(False, "database schema is behind: run `sluice migrate`")
        return Component(True, "reachable, migrations current")
    finally:
        await conn.close()


def probe_app(
    dsn: str, readiness: Readiness = READINESS
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A tiny ASGI app; kept dependency-free so every service can carry it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}', "application/json")
        elif path == "/readyz":
            components = {"database": await database_status(dsn), **readiness.snapshot()}
            ok = all(c.ok for c in components.values())
            body = json.dumps(
                {
                    "status": "ready" if ok else "not_ready",
                    "components": {
                        k: {"ok": c.ok, "detail": c.detail} for k, c in components.items()
                    },
                }
            ).encode()
            await _respond(send, 200 if ok else 503, body, "application/json")
        elif path == "/metrics":
            await _respond(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            await _respond(
                send,
                404,
                b'{"error":{"code":"not_found","message":"no such path"}}',
                "application/json",
            )

    return app


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class QuietServer(uvicorn.Server):
    """uvicorn without its signal capture: the process's handlers set `stop`; uvicorn's would
    replace them (so Ctrl-C under `sluice dev` stopped only one server) and re-raise the signal
    after shutdown. Every HTTP server of sluice uses this class."""

    def __init__(self, config: uvicorn.Config, name: str = "http") -> None:
        super().__init__(config)
        self.name = name

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        # uvicorn's own start lines (three or four per server, under "uvicorn.error") are
        # silenced in shared.logging; this one line says which server listens where.
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        addresses = [sock.getsockname() for server in self.servers for sock in server.sockets or ()]
        urls = sorted({f"http://{a[0]}:{a[1]}" for a in addresses if isinstance(a, tuple)})
        log.info("server_started", server=self.name, url=", ".join(urls))


async def serve_asgi(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve an ASGI app until `stop` is set, then finish in-flight requests and return."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="auto"
    )
    server = QuietServer(config, name="probes")
    task = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            # The server ended on its own (e.g. the port is taken): surface it.
            task.result()
            raise RuntimeError(f"HTTP server on {host}:{port} stopped unexpectedly")
    finally:
        stopping.cancel()
        server.should_exit = True
        if not task.done():
            await task


async def serve_probes(dsn: str, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the probe endpoints until `stop` is set; port 0 disables them."""
    if port == 0:
        await stop.wait()
        return
    await serve_asgi(probe_app(dsn), host, port, stop)
