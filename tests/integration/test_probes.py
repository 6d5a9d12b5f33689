"""/healthz, /readyz and /metrics served by every service process."""

from __future__ import annotations

import asyncio

import httpx

from services.dev.servers.process import free_port
from shared.probes import Readiness, probe_app, serve_asgi


async def test_probe_endpoints(db_url: str) -> None:
    readiness = Readiness()
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_asgi(probe_app(db_url, readiness), "127.0.0.1", port, stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(200):
                try:
                    health = await client.get("/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)  # waiting for the server socket, not for a race
            assert health.status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["components"]["database"]["ok"] is True
            readiness.set("kafka", False, "broker unreachable")
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["components"]["kafka"]["detail"] == "broker unreachable"
            metrics = await client.get("/metrics")
            assert "sluice_event_to_node_start_seconds_bucket" in metrics.text
    finally:
        stop.set()
        await server
    assert server.done() and server.exception() is None


async def test_readyz_reports_unreachable_database() -> None:
    port = free_port()
    stop = asyncio.Event()
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    server = asyncio.create_task(serve_asgi(probe_app(dsn, Readiness()), "127.0.0.1", port, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    ready = await client.get("/readyz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert ready.status_code == 503
            assert "unreachable" in ready.json()["components"]["database"]["detail"]
    finally:
        stop.set()
        await server
