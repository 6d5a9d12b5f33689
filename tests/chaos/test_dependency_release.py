"""Crash at the upstream's final write: the executor running A is SIGKILLed while its final
transaction is blocked mid-way; a second executor re-runs A. B (which depends on A) is released
exactly once and runs once, and the `workflow` trigger on A starts C exactly once, admitted by a
real scheduler process that is itself SIGKILLed and restarted along the way."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.scheduler.service import Scheduler
from shared.db import triggers as trigger_repo
from shared.models.triggers import WorkflowTriggerSpec
from tests.factories import DEFAULT_WS, shell_node, workflow
from tests.support.api import ROOT, SLUICE, sluice_env
from tests.support.chaos import SUMMARIES
from tests.support.executor import executor_process, wait_for, wait_instance
from tests.support.scheduler import Pool, publish, scheduled, utc

DAILY = "0 0 2 * * ?"
# The scheduler process runs on the real clock: no fire after the one under test.
ENDS = utc("2026-12-04T03:00")
# The first attempt waits for the gate, so the test can hold A's row before A's final write.
GATED = 'while [ ! -e "${gate}" ]; do sleep 0.05; done'


@asynccontextmanager
async def scheduler_process(db_url: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            SLUICE,
            "run",
            "scheduler",
            env=sluice_env(db_url, SLUICE_POLL_INTERVAL_S="30"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.timeout(180)
async def test_executor_killed_at_the_upstream_final_write_releases_once(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    ods = scheduled(
        "ods",
        DAILY,
        nodes=[shell_node("load", code=GATED, retries=2, retry_delay_s=0)],
        parameters={"gate": str(gate)},
        end_at=ENDS,
    )
    await publish(pool, ods, at=utc("2026-12-03T12:00"))
    await publish(
        pool,
        scheduled("dwd", DAILY, end_at=ENDS, depends_on=[{"workflow": "ods"}]),
        at=utc("2026-12-03T12:00"),
    )
    async with pool.acquire() as conn:
        await trigger_repo.upsert(
            conn,
            "default",
            DEFAULT_WS,
            WorkflowTriggerSpec(name="after_ods", type="workflow", workflow="ods"),
        )
    await publish(pool, workflow("notify", trigger="after_ods"))
    await Scheduler(pool).tick(utc("2026-12-04T02:00:00.01"))
    a = int(await pool.fetchval("SELECT id FROM instances WHERE kind = 'scheduled' ORDER BY id"))
    b = a + 1

    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(executor_process(db_url, tmp_path / "e1.log"))
        sched = await stack.enter_async_context(scheduler_process(db_url, tmp_path / "s1.log"))
        await wait_for(
            pool,
            "SELECT 1 FROM node_instances WHERE instance_id = $1 AND state = 'running'",
            a,
        )
        holder = await pool.acquire()
        held = holder.transaction()
        await held.start()
        try:
            await holder.execute("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE", a)
            gate.touch()
            # the executor's final transaction for A is now open and blocked on A's row
            await wait_for(
                pool,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'sluice-executor' "
                "AND wait_event_type = 'Lock' AND state = 'active' "
                # the first statement of finish_attempts: lock the instances of finished nodes
                "AND query LIKE '%SELECT instance_id FROM node_instances WHERE id = ANY%'",
            )
            await kill(first)
        finally:
            await held.rollback()
            await pool.release(holder)
        # the scheduler dies too; a fresh one must pick up whatever it left
        await kill(sched)
        assert await pool.fetchval("SELECT state FROM instances WHERE id = $1", a) == "running"
        await stack.enter_async_context(executor_process(db_url, tmp_path / "e2.log"))
        await stack.enter_async_context(scheduler_process(db_url, tmp_path / "s2.log"))
        assert await wait_instance(pool, a) == "succeeded"
        assert await wait_instance(pool, b) == "succeeded"
        c = await wait_for(
            pool,
            "SELECT i.id FROM instances i JOIN workflows w ON w.id = i.workflow_id "
            "WHERE w.name = 'notify'",
        )
        assert await wait_instance(pool, int(c)) == "succeeded"
        assert await pool.fetchval("SELECT count(*) FROM workflow_finishes") == 0

    attempts = await pool.fetch(
        "SELECT a.state, a.reason FROM attempts a JOIN node_instances n "
        "ON n.id = a.node_instance_id WHERE n.instance_id = $1 ORDER BY a.attempt",
        a,
    )
    assert [r["state"] for r in attempts] == ["lost", "succeeded"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM instances WHERE workflow_id = "
            "(SELECT workflow_id FROM instances WHERE id = $1)",
            b,
        )
        == 1
    )
    b_attempts = await pool.fetchval(
        "SELECT count(*) FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1",
        b,
    )
    assert b_attempts == 1
    assert (
        await pool.fetchval(
            "SELECT satisfied_by FROM instance_dependencies WHERE instance_id = $1", b
        )
        == a
    )
    runs_of_c = await pool.fetchval(
        "SELECT count(*) FROM instances i JOIN workflows w ON w.id = i.workflow_id "
        "WHERE w.name = 'notify'"
    )
    assert runs_of_c == 1
    SUMMARIES.append(
        f"dependency release: executor SIGKILLed at A's final write, scheduler SIGKILLed; "
        f"A attempts {[r['state'] for r in attempts]}, B runs 1, C runs {runs_of_c}"
    )
