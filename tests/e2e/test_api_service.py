"""`sluice run api` as a process: bootstrap token, graceful stop with open streams, bad start."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import httpx

from services.dev.servers.process import free_port
from tests.support.api import ROOT, SLUICE, api_subprocess, sluice_env

WS = "/workspaces/default"


async def test_sigterm_ends_open_log_streams_and_exits_cleanly(db_url: str) -> None:
    async with api_subprocess(db_url) as server:
        assert server.process is not None
        async with server.client() as client:
            spec = {
                "name": "m",
                "type": "manual",
                "nodes": [{"name": "a", "type": "shell", "code": "true"}],
            }
            await client.put(f"{WS}/workflows/m", json=spec, params={"publish": True})
            iid = (await client.post(f"{WS}/workflows/m/runs", json={})).json()["instance_id"]
            path = f"{WS}/instances/{iid}/nodes/a/log"
            # No executor runs: the follow would wait for the first attempt forever.
            async with client.stream("GET", path, params={"follow": True}) as response:
                assert response.status_code == 200
                began = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                body = "".join([chunk async for chunk in response.aiter_text()])
            code = await asyncio.wait_for(server.process.wait(), 15)
    assert body == ""
    assert code == 0
    assert time.monotonic() - began < 5


async def test_bootstrap_token_is_kept_alive_across_restarts(db_url: str) -> None:
    async with api_subprocess(db_url) as server, server.client() as client:
        tokens = (await client.get(f"{WS}/tokens")).json()["items"]
        [bootstrap] = [t for t in tokens if t["name"] == "bootstrap"]
        assert bootstrap["role"] == "admin"
        assert (await client.delete(f"{WS}/tokens/{bootstrap['id']}")).status_code == 204
        assert (await client.get(f"{WS}/tokens")).status_code == 401
    async with api_subprocess(db_url) as server, server.client() as client:
        revived = (await client.get(f"{WS}/tokens")).json()["items"]
        assert [t["id"] for t in revived if t["name"] == "bootstrap"] == [bootstrap["id"]]


async def test_an_unreachable_database_stops_the_process_with_an_error() -> None:
    env = sluice_env(
        "postgresql://nobody@127.0.0.1:1/none",
        SLUICE_API_PORT=str(free_port()),
        SLUICE_HOST="127.0.0.1",
    )
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "run",
        "api",
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode not in (0, None)
    text = err.decode()
    assert "the API server could not start" in text
    assert "database_unreachable" in text and "Connect call failed" in text


async def test_readyz_reports_the_database(db_url: str) -> None:
    async with api_subprocess(db_url) as server, httpx.AsyncClient(base_url=server.url) as c:
        ready = await c.get("/readyz")
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "current"},
        }
        assert (await c.get("/healthz")).status_code == 200
