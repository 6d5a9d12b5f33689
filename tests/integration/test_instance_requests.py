"""Terminate and rerun requests: recorded once, carried out by one executor, results kept."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, TypeAlias

import asyncpg

from services.executor.requests import carry_out
from shared.operations import requests as instance_requests
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    flow,
    running_executor,
    save,
    wait_for,
    wait_gone,
    wait_instance,
    wait_request,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def test_a_terminate_request_kills_the_process_within_two_seconds(
    pool: Pool, db_url: str
) -> None:
    version = await save(pool, flow("t", [shell_node("s", code='echo "pid $$"; sleep 300')]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, kill_grace_s=0.5):
        text = await wait_for(
            pool,
            """SELECT string_agg(l.data, '' ORDER BY l.seq) FROM attempt_logs l
               JOIN attempts a ON a.id = l.attempt_id
               JOIN node_instances n ON n.id = a.node_instance_id
               WHERE n.instance_id = $1 HAVING string_agg(l.data, '') LIKE '%pid%'""",
            iid,
        )
        [pid] = [int(p) for p in re.findall(r"pid (\d+)", text)]
        started = time.monotonic()
        async with pool.acquire() as conn:
            asked = await instance_requests.request(conn, DEFAULT_WS, iid, "terminate")
        assert asked.state == "pending"
        await wait_gone(pid, 2.0)
        assert time.monotonic() - started < 2.0
        assert await wait_request(pool, asked.id) == "done"
    assert await wait_instance(pool, iid) == "terminated"
    [attempt] = await attempts_of(pool, iid, "s")
    assert attempt["state"] == "terminated"


async def test_each_request_is_carried_out_once_by_competing_executors(pool: Pool) -> None:
    version = await save(pool, flow("many", [shell_node("a")]))
    ids = await enqueue(pool, version, count=30)
    async with pool.acquire() as conn:
        asked = [await instance_requests.request(conn, DEFAULT_WS, i, "terminate") for i in ids]

    async def one_executor() -> list[int]:
        async with pool.acquire() as conn:
            return [o.request_id for o in await carry_out(conn)]

    done = await asyncio.gather(*(one_executor() for _ in range(4)))
    carried = [r for batch in done for r in batch]
    assert sorted(carried) == sorted(a.id for a in asked)  # every one, none twice
    states = await pool.fetch("SELECT state, instance_state FROM instance_requests")
    assert {(r["state"], r["instance_state"]) for r in states} == {("done", "terminated")}


async def test_a_rerun_with_nothing_to_rerun_fails_with_the_reason(pool: Pool) -> None:
    version = await save(pool, flow("ok", [shell_node("a")]))
    [iid] = await enqueue(pool, version)
    await pool.execute(
        "UPDATE node_instances SET state = 'succeeded', finished_at = now() WHERE instance_id = $1",
        iid,
    )
    await pool.execute(
        "UPDATE instances SET state = 'succeeded', finished_at = now() WHERE id = $1", iid
    )
    async with pool.acquire() as conn:
        asked = await instance_requests.request(conn, DEFAULT_WS, iid, "rerun", mode="failed")
        [outcome] = await carry_out(conn)
        shown = await instance_requests.get(conn, DEFAULT_WS, asked.id)
    assert (outcome.state, shown.state) == ("failed", "failed")
    assert shown.reason == f"instance {iid} has no failed nodes to rerun"
    assert shown.instance_state == "succeeded" and shown.finished_at is not None
