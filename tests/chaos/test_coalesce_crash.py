"""Coalescing windows through crashes: the webhook receiver and the scheduler that closes expired
windows are SIGKILLed mid-window while a store keeps retrying its notifications. Every object
must end up in exactly one instance, and every window must close into exactly one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import pytest

from shared.embedded.process import free_port
from tests.chaos.test_storage_intake import deliver_with_retries, minio_event, storage_env
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.chaos import (
    Pool,
    alive,
    kill_hard,
    message_ids,
    poll,
    ready,
    service_process,
    summary,
    tally,
)

SETTLE_S = 120.0


async def members(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM coalesce_members"))


async def _ready(port: int) -> bool | None:
    return True if await ready(port) else None


async def _members_at_least(pool: Pool, count: int) -> bool | None:
    return True if await members(pool) >= count else None


async def _all_closed(pool: Pool, count: int) -> bool | None:
    done = await members(pool) >= count
    open_ = await pool.fetchval("SELECT count(*) FROM coalesce_windows WHERE closed_at IS NULL")
    return True if done and open_ == 0 else None


@pytest.mark.timeout(300)
async def test_listener_and_closer_killed_mid_window(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await add_trigger(
            conn, s3_trigger("files", "data", coalesce={"window_s": 1, "max_events": 40})
        )
        await add_workflow(conn, workflow("batch", trigger="files"))
    keys = [f"in/{m}.csv" for m in message_ids("coalesce", 400)]
    listener_env = storage_env(db_url)
    scheduler_env = storage_env(
        db_url, SLUICE_POLL_INTERVAL_S="0.5", SLUICE_METRICS_PORT=str(free_port())
    )
    url = f"http://127.0.0.1:{listener_env['SLUICE_WEBHOOK_PORT']}/hooks/s3"
    listener_port = int(listener_env["SLUICE_METRICS_PORT"])
    attempts: list[int] = []

    async def sender(share: list[str]) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            for key in share:
                attempts.append(await deliver_with_retries(client, url, minio_event("data", key)))
                await asyncio.sleep(0.01)  # a store sends as objects arrive, not all at once

    listener_log, scheduler_log = tmp_path / "listener.log", tmp_path / "scheduler.log"
    async with (
        service_process("storage-listener", listener_env, listener_log) as listener,
        service_process("scheduler", scheduler_env, scheduler_log) as scheduler,
    ):
        await poll(partial(_ready, listener_port), timeout_s=60, what="storage listener ready")
        senders = asyncio.gather(*(sender(keys[i::4]) for i in range(4)))
        await poll(partial(_members_at_least, pool, 150), timeout_s=60, what="150 events in")
        kill_hard(listener.pid)
        kill_hard(scheduler.pid)
        await listener.wait()
        await scheduler.wait()
    async with (
        service_process("storage-listener", listener_env, listener_log) as listener,
        service_process("scheduler", scheduler_env, scheduler_log) as scheduler,
    ):
        restarted = time.monotonic()
        await asyncio.wait_for(senders, SETTLE_S)
        recover_s = time.monotonic() - restarted
        await poll(partial(_all_closed, pool, len(keys)), timeout_s=SETTLE_S, what="all closed")
        assert alive(listener.pid) and alive(scheduler.pid)

    instances = [r["id"] for r in await pool.fetch("SELECT id FROM instances ORDER BY id")]
    windows = await pool.fetch("SELECT instance_id, events FROM coalesce_windows ORDER BY id")
    assert sorted(w["instance_id"] for w in windows) == instances
    rows = await pool.fetch(
        "SELECT w.instance_id, m.message->'data'->'s3'->'object'->>'key' AS key "
        "FROM coalesce_members m JOIN coalesce_windows w ON w.id = m.window_id"
    )
    found = [r["key"] for r in rows]
    result = tally(keys, found)
    summary("coalesce-listener-and-closer-killed", result, recover_s)
    assert result.lost == [] and result.duplicated == {}
    assert max(Counter(found).values()) == 1
    assert all(0 < w["events"] <= 40 for w in windows)
    assert max(attempts) > 1, "no notification was retried: the receiver was never seen down"
