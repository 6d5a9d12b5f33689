"""Executors as real processes: limits across replicas, SIGKILL rescue, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from tests.factories import shell_node
from tests.support.executor import (
    TEST_CONFIG,
    attempts_of,
    enqueue,
    executor_process,
    flow,
    kill_quietly,
    save,
    wait_for,
    wait_instance,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"


def max_overlap(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


async def sample_until_done(pool: Pool, ids: list[int], query: str) -> list[int]:
    """Sample `query` on every executor NOTIFY until every instance has ended."""
    samples: list[int] = []
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    conn = await pool.acquire()
    channels = ("sluice_instances", "sluice_nodes")
    try:
        for channel in channels:
            await conn.add_listener(channel, wake)
        async with asyncio.timeout(120):
            while True:
                woken.clear()
                samples.append(int(await pool.fetchval(query)))
                left = await pool.fetchval(
                    "SELECT count(*) FROM instances WHERE id = ANY($1) AND finished_at IS NULL",
                    ids,
                )
                if not left:
                    return samples
                await woken.wait()
    finally:
        for channel in channels:
            await conn.remove_listener(channel, wake)
        await pool.release(conn)


async def test_three_executors_never_run_more_than_max_parallel_instances(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    version = await save(
        pool, flow("limited", [shell_node("a", code="sleep 0.02")], max_parallel_instances=2)
    )
    ids = await enqueue(pool, version, 60)
    async with AsyncExitStack() as stack:
        for i in range(3):
            await stack.enter_async_context(executor_process(db_url, tmp_path / f"e{i}.log"))
        samples = await sample_until_done(
            pool, ids, "SELECT count(*) FROM instances WHERE state = 'running'"
        )
    assert max(samples) <= 2
    rows = await pool.fetch("SELECT state, started_at, finished_at FROM instances")
    assert {r["state"] for r in rows} == {"succeeded"}
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in rows]) == 2
    executors = await pool.fetch("SELECT DISTINCT executor FROM attempts")
    assert len(executors) >= 2


FIRST_ATTEMPT_HANGS = """
if [ "$SLUICE_ATTEMPT" = 1 ]; then echo "pid $$"; echo ready; exec sleep 300; fi
echo "second try"
"""


async def test_sigkilled_executor_attempt_is_rescued_once(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    lease_s = 3.0
    node = shell_node("a", code=FIRST_ATTEMPT_HANGS, retries=1, retry_delay_s=0)
    version = await save(pool, flow("rescue", [node]))
    [iid] = await enqueue(pool, version)
    env = {"SLUICE_LEASE_S": str(lease_s)}
    orphan = 0
    try:
        async with executor_process(db_url, tmp_path / "a.log", **env) as first:
            text = await wait_for(
                pool,
                """SELECT l.data FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id
                   WHERE l.data LIKE '%ready%'""",
            )
            orphan = int(re.findall(r"pid (\d+)", text)[0])
            first.send_signal(signal.SIGKILL)
            await first.wait()
            killed_at = time.monotonic()
        async with executor_process(db_url, tmp_path / "b.log", **env):
            assert await wait_instance(pool, iid) == "succeeded"
            rescued_after = time.monotonic() - killed_at
    finally:
        kill_quietly(orphan)
    first_attempt, second = await attempts_of(pool, iid, "a")
    assert (first_attempt["state"], first_attempt["reason"]) == ("lost", "lost")
    assert second["state"] == "succeeded"
    assert first_attempt["executor"] != second["executor"]
    # Never two live attempts: the first was settled before the second was claimed.
    assert first_attempt["finished_at"] <= second["started_at"]
    sweep_s = lease_s / 2
    startup_allowance_s = 5.0
    assert rescued_after <= lease_s + sweep_s + startup_allowance_s


@pytest.mark.parametrize(
    ("code", "drain_s", "states", "reasons"),
    [
        ("sleep 0.5; echo finished", "30", ["succeeded"], [None]),
        (
            'if [ "$SLUICE_ATTEMPT" = 1 ]; then echo ready; exec sleep 300; fi',
            "0.3",
            ["lost", "succeeded"],
            ["released", None],
        ),
    ],
)
async def test_sigterm_drains_then_releases(
    pool: Pool,
    db_url: str,
    tmp_path: Path,
    code: str,
    drain_s: str,
    states: list[str],
    reasons: list[str | None],
) -> None:
    # retries=0: a released attempt must run again anyway (it is not charged).
    version = await save(pool, flow("drain", [shell_node("a", code=f"echo ready; {code}")]))
    [iid] = await enqueue(pool, version)
    async with executor_process(db_url, tmp_path / "a.log", SLUICE_DRAIN_TIMEOUT_S=drain_s) as proc:
        await wait_for(
            pool,
            """SELECT 1 FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id
               WHERE a.state = 'running' AND l.data LIKE 'ready%'""",
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    if len(states) > 1:
        assert (
            await pool.fetchval("SELECT state FROM node_instances WHERE instance_id = $1", iid)
            == "ready"
        )
        async with executor_process(db_url, tmp_path / "b.log"):
            assert await wait_instance(pool, iid) == "succeeded"
    else:
        assert await wait_instance(pool, iid) == "succeeded"
    attempts = await attempts_of(pool, iid, "a")
    assert [a["state"] for a in attempts] == states
    assert [a["reason"] for a in attempts] == reasons
    assert TEST_CONFIG["drain_timeout_s"] == 0.0
