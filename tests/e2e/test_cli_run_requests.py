"""`sluice run-workflow` and `sluice backfill` as real processes: one Idempotency-Key per
invocation, retried through a connection that loses the first answer, and one run created."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest

from tests.factories import shell_node
from tests.support.api import ApiServer, Pool, sluice_cli

WS = "/workspaces/default"
_KEY = re.compile(rb"(?im)^idempotency-key:\s*(\S+)\r$")


class LosingProxy:
    """A TCP proxy in front of the API that forwards each request but, on its first `lose`
    connections, drops the answer: the server acted, the client sees the connection reset."""

    def __init__(self, upstream_port: int, lose: int) -> None:
        self.upstream_port = upstream_port
        self.lose = lose
        self.connections = 0
        self.keys: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        losing = self.connections <= self.lose
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def to_upstream() -> None:
            while chunk := await reader.read(65536):
                self.keys.extend(_KEY.findall(chunk))
                up_writer.write(chunk)
                await up_writer.drain()

        forward = asyncio.create_task(to_upstream())
        try:
            while chunk := await up_reader.read(65536):
                if losing:
                    break  # the answer exists; the client never gets it
                writer.write(chunk)
                await writer.drain()
        finally:
            forward.cancel()
            up_writer.close()
            writer.transport.abort()


@asynccontextmanager
async def losing_proxy(
    server: ApiServer, lose: int
) -> AsyncIterator[tuple[ApiServer, LosingProxy]]:
    port = int(server.url.rsplit(":", 1)[1])
    proxy = LosingProxy(port, lose)
    listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    bound = listener.sockets[0].getsockname()[1]
    try:
        yield replace(server, url=f"http://127.0.0.1:{bound}"), proxy
    finally:
        listener.close()


async def test_run_workflow_retries_a_lost_answer_with_its_key_and_runs_once(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
    assert (await api.put(f"{WS}/workflows/wf", json=spec, params={"publish": 1})).is_success
    async with losing_proxy(api_server, lose=2) as (through, proxy):
        result = await sluice_cli(through, "run-workflow", "wf", "--bizdate", "20260309")
    assert result.code == 0, result.err
    ids = await pool.fetch("SELECT id, bizdate FROM instances")
    assert len(ids) == 1
    assert result.out.strip() == f"instance {ids[0]['id']} waiting"
    assert str(ids[0]["bizdate"]) == "2026-03-09"
    # Three attempts, two answers lost, one key for all of them.
    assert proxy.connections == 3
    assert len(proxy.keys) == 3 and len(set(proxy.keys)) == 1


async def test_each_invocation_sends_a_fresh_key(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
    assert (await api.put(f"{WS}/workflows/wf", json=spec, params={"publish": 1})).is_success
    async with losing_proxy(api_server, lose=0) as (through, proxy):
        for _ in range(2):
            assert (await sluice_cli(through, "run-workflow", "wf")).code == 0
    assert len(set(proxy.keys)) == 2
    assert await pool.fetchval("SELECT count(*) FROM instances") == 2


@pytest.mark.timeout(60)
async def test_backfill_by_bizdates_through_a_lossy_connection_creates_one_group(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {
        "name": "daily",
        "type": "scheduled",
        "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
        "nodes": [shell_node("a")],
    }
    assert (await api.put(f"{WS}/workflows/daily", json=spec, params={"publish": 1})).is_success
    async with losing_proxy(api_server, lose=1) as (through, _):
        result = await sluice_cli(
            through, "backfill", "daily", "--start", "20261101", "--end", "20261103"
        )
    assert result.code == 0, result.err
    backfill_id = await pool.fetchval("SELECT id FROM backfills")
    assert await pool.fetchval("SELECT count(*) FROM backfills") == 1
    assert f"backfill     {backfill_id}\n" in result.out and "instances    3 (" in result.out
    bizdates = await pool.fetch("SELECT bizdate FROM instances ORDER BY cyctime")
    assert [str(r["bizdate"]) for r in bizdates] == ["2026-11-01", "2026-11-02", "2026-11-03"]


async def test_an_api_that_never_answers_is_exit_3_after_the_retries(
    api_server: ApiServer,
) -> None:
    async with losing_proxy(api_server, lose=100) as (through, proxy):
        result = await sluice_cli(through, "run-workflow", "wf")
    assert result.code == 3
    assert "cannot reach the sluice API" in result.err
    assert proxy.connections == 6 and len(set(proxy.keys)) == 1
