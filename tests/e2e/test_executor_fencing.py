"""Fencing with real executor processes, judged by the node processes' own timestamps.

A node appends `<attempt> <wall-clock ns>` to a file every 20 ms while it lives (the first
attempt for a minute, a retry for a second). An executor is paused (SIGSTOP) past its lease, or
killed (SIGKILL); another executor rescues the attempt. The first attempt's last heartbeat must
come before the retry's first one: never two live attempts of a node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from services.executor.fencing import fence_margin_s
from shared.db import connections
from shared.db.connections import ConnectionSpec
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    executor_process,
    flow,
    save,
    wait_instance,
)
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"
LEASE_S = 3.0


def heartbeat_code(path: Path) -> str:
    return f"""
if [ "$SLUICE_ATTEMPT" = 1 ]; then n=3000; else n=50; fi
while [ $n -gt 0 ]; do
  echo "$SLUICE_ATTEMPT $(date +%s%N)" >> {path}
  n=$((n - 1)); sleep 0.02
done
"""


def heartbeats(path: Path) -> dict[int, list[int]]:
    beats: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        attempt, ns = line.split()
        beats.setdefault(int(attempt), []).append(int(ns))
    return beats


def has_beats(path: Path) -> bool:
    return os.path.exists(path) and os.path.getsize(path) > 0


async def first_heartbeat(path: Path) -> None:
    async with asyncio.timeout(30):
        while True:
            if has_beats(path):
                return
            await asyncio.sleep(0.02)


async def rescue(
    pool: Pool, db_url: str, tmp_path: Path, disturb: signal.Signals
) -> tuple[dict[int, list[int]], int]:
    beats_path = tmp_path / "beats"
    node = shell_node("a", code=heartbeat_code(beats_path), retries=1, retry_delay_s=0)
    version = await save(pool, flow("fenced", [node]))
    [iid] = await enqueue(pool, version)
    env = {"SLUICE_LEASE_S": str(LEASE_S)}
    async with executor_process(db_url, tmp_path / "a.log", **env) as first:
        await first_heartbeat(beats_path)
        first.send_signal(disturb)
        disturbed_ns = time.time_ns()
        try:
            async with executor_process(db_url, tmp_path / "b.log", **env):
                assert await wait_instance(pool, iid) == "succeeded"
        finally:
            if disturb == signal.SIGSTOP:
                first.send_signal(signal.SIGCONT)
    attempts = await attempts_of(pool, iid, "a")
    assert [(a["state"], a["reason"]) for a in attempts] == [("lost", "lost"), ("succeeded", None)]
    assert attempts[0]["executor"] != attempts[1]["executor"]
    return heartbeats(beats_path), disturbed_ns


async def test_a_paused_executor_s_node_dies_before_its_attempt_is_retried(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    beats, paused_ns = await rescue(pool, db_url, tmp_path, signal.SIGSTOP)
    assert max(beats[1]) < min(beats[2])
    # The node died by itself while its executor was paused, a margin before the lease ended.
    fence_s = LEASE_S - fence_margin_s(LEASE_S)
    assert (max(beats[1]) - paused_ns) / 1e9 < fence_s + 0.5


async def test_a_killed_executor_s_node_dies_at_once(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    beats, killed_ns = await rescue(pool, db_url, tmp_path, signal.SIGKILL)
    assert max(beats[1]) < min(beats[2])
    assert (max(beats[1]) - killed_ns) / 1e9 < 1.0


# First run sleeps a minute; every run divides by zero if another node statement is active.
SLEEPY_SQL = """SELECT 1 / (1 - least(1, (SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'sluice-node' AND state = 'active'
                    AND datname = current_database()
                    AND pid <> pg_backend_pid()))::int) AS alone,
       pg_sleep(CASE WHEN nextval('sluice_test_runs') = 1 THEN 60 ELSE 0 END)"""
ACTIVE_SQL = """SELECT count(*) FROM pg_stat_activity
                WHERE application_name = 'sluice-node' AND state = 'active'
                    AND datname = current_database()"""


async def wait_value(pool: Pool, query: str, timeout_s: float = 30) -> float:
    """Seconds until `query` returns a truthy value."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while True:
            if await pool.fetchval(query):
                return time.monotonic() - started
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("disturb", [signal.SIGSTOP, signal.SIGKILL], ids=["paused", "killed"])
async def test_a_disturbed_executor_s_sql_statement_is_cancelled_before_the_retry(
    pool: Pool, db_url: str, tmp_path: Path, disturb: signal.Signals
) -> None:
    await pool.execute("CREATE SEQUENCE sluice_test_runs")
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(name="db", kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )
    node = {
        "name": "q",
        "type": "sql",
        "connection": "db",
        "code": SLEEPY_SQL,
        "retries": 1,
        "retry_delay_s": 0,
        "timeout_s": 120,
    }
    version = await save(pool, flow("sqlfenced", [node]))
    [iid] = await enqueue(pool, version)
    env = {"SLUICE_LEASE_S": str(LEASE_S)}
    async with executor_process(db_url, tmp_path / "a.log", **env) as first:
        # The node's own statement, not the type introspection that precedes it.
        await wait_value(pool, f"SELECT ({ACTIVE_SQL} AND query LIKE '%sluice_test_runs%') > 0")
        first.send_signal(disturb)
        try:
            try:
                gone_s = await wait_value(pool, f"SELECT ({ACTIVE_SQL}) = 0")
            except TimeoutError:
                # What the executor and its statement fence said is the only clue to why.
                log_tail = (tmp_path / "a.log").read_text(errors="replace")[-4000:]
                pytest.fail(f"the node's statement was never cancelled; executor log:\n{log_tail}")
            async with executor_process(db_url, tmp_path / "b.log", **env):
                assert await wait_instance(pool, iid) == "succeeded"
        finally:
            if disturb == signal.SIGSTOP:
                first.send_signal(signal.SIGCONT)
    # Cancelled by the statement's fence: at its deadline (before the lease could expire) when
    # paused, at once when killed.
    assert gone_s < (LEASE_S if disturb == signal.SIGSTOP else 1.0)
    attempts = await attempts_of(pool, iid, "q")
    assert [(a["state"], a["reason"]) for a in attempts] == [("lost", "lost"), ("succeeded", None)]
