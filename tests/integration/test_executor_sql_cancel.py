"""SQL nodes: a stopped attempt's statement is cancelled on the real PostgreSQL server.

Each node's statement sleeps a minute on its first run only (a sequence counts runs, outside any
transaction) and, on every run, divides by zero when another node statement is still active:
a retry that overlaps the first attempt's statement fails the instance.
"""

from __future__ import annotations

import time
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections
from shared.db.connections import ConnectionSpec
from shared.operations.instances import terminate_instance
from tests.factories import DEFAULT_WS
from tests.support.executor import (
    attempts_of,
    enqueue,
    flow,
    running_executor,
    save,
    wait_for,
    wait_instance,
)
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"

ACTIVE = """SELECT count(*) FROM pg_stat_activity
            WHERE application_name = 'sluice-node' AND state = 'active'
                    AND datname = current_database()"""
RUNNING_FIRST = "SELECT 1 FROM attempts WHERE state = 'running' AND attempt = 1"
SLEEPY = """SELECT 1 / (1 - least(1, (SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'sluice-node' AND state = 'active'
                    AND datname = current_database()
                    AND pid <> pg_backend_pid()))::int) AS alone,
       pg_sleep(CASE WHEN nextval('sluice_test_runs') = 1 THEN 60 ELSE 0 END)"""


async def setup(pool: Pool, db_url: str, **node: Any) -> int:
    await pool.execute("CREATE SEQUENCE IF NOT EXISTS sluice_test_runs")
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(name="db", kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )
    spec = {"name": "q", "type": "sql", "connection": "db", "code": SLEEPY, **node}
    version = await save(pool, flow("sqlcancel", [spec]))
    [iid] = await enqueue(pool, version)
    return iid


async def statement_running(pool: Pool) -> None:
    await wait_for(pool, RUNNING_FIRST)
    # The node's own statement, not the type introspection that precedes it.
    await wait_for(pool, f"SELECT ({ACTIVE} AND query LIKE '%pg_sleep%') > 0")


async def gone_within(pool: Pool, seconds: float) -> float:
    started = time.monotonic()
    await wait_for(pool, f"SELECT ({ACTIVE}) = 0", timeout_s=seconds)
    return time.monotonic() - started


async def test_timeout_cancels_the_statement_before_the_retry(pool: Pool, db_url: str) -> None:
    iid = await setup(pool, db_url, timeout_s=1, retries=1, retry_delay_s=0)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    first, second = await attempts_of(pool, iid, "q")
    assert (first["state"], first["reason"]) == ("failed", "timeout")
    assert second["state"] == "succeeded"


async def test_terminate_cancels_the_statement(pool: Pool, db_url: str) -> None:
    iid = await setup(pool, db_url, timeout_s=120)
    async with running_executor(db_url):
        await statement_running(pool)
        async with pool.acquire() as conn:
            await terminate_instance(conn, DEFAULT_WS, iid)
        assert await gone_within(pool, 5) < 5
    assert await wait_instance(pool, iid) == "terminated"


async def test_drain_cancels_the_statement_before_release(pool: Pool, db_url: str) -> None:
    iid = await setup(pool, db_url, timeout_s=120)
    async with running_executor(db_url, drain_timeout_s=0.0):
        await statement_running(pool)
    # The executor has returned: its released attempt's statement is already gone.
    assert await pool.fetchval(ACTIVE) == 0
    [released] = await attempts_of(pool, iid, "q")
    assert released["reason"] == "released"
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"


@pytest.mark.timeout(60)
async def test_lost_lease_cancels_the_statement_before_the_retry(pool: Pool, db_url: str) -> None:
    iid = await setup(pool, db_url, timeout_s=120, retries=1, retry_delay_s=0)
    async with running_executor(db_url, lease_s=3.0):
        await statement_running(pool)
        # Another holder took the lease: the next renewal finds it lost.
        await pool.execute(
            "UPDATE node_instances SET lease_token = gen_random_uuid() WHERE instance_id = $1",
            iid,
        )
        assert await gone_within(pool, 3) < 3
        # The lease then expires and the sweeper re-queues the attempt; the retry finds no
        # statement of the first attempt still running.
        assert await wait_instance(pool, iid) == "succeeded"
    first, second = await attempts_of(pool, iid, "q")
    assert first["reason"] == "lost"
    assert second["state"] == "succeeded"


STUBBORN = """DO $$ BEGIN
  LOOP
    BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END;
  END LOOP;
END $$"""


async def test_a_statement_that_swallows_cancels_is_still_stopped(pool: Pool, db_url: str) -> None:
    """A cancel request alone does not stop code that catches query_canceled (nor does
    statement_timeout): the session is terminated as well."""
    iid = await setup(pool, db_url, code=STUBBORN, timeout_s=120)
    async with running_executor(db_url):
        await statement_running(pool)
        async with pool.acquire() as conn:
            await terminate_instance(conn, DEFAULT_WS, iid)
        assert await gone_within(pool, 5) < 5
