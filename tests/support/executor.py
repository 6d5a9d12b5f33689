"""Executor test helpers: run executors in-process or as real processes, create runs, wait on
database state (woken by NOTIFY, never by fixed sleeps) and on process death (pidfd).

    from tests.support.executor import running_executor, enqueue, wait_for
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from services.executor.config import ExecutorConfig
from services.executor.requests import carry_out
from services.executor.service import run_executor
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.workflows import LoadedVersion
from shared.models.workflows import WorkflowSpec
from shared.settings import load_settings
from tests.factories import DEFAULT_WS, NOW, workflow
from tests.support.secrets import TEST_SECRET_KEY

Pool: TypeAlias = "asyncpg.Pool[Any]"
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
# Short enough that lease tests finish quickly, long enough for a loaded 2-core machine.
TEST_CONFIG: dict[str, Any] = {
    "lease_s": 6.0,
    "poll_interval_s": 0.5,
    "drain_timeout_s": 0.0,
    "kill_grace_s": 0.5,
    "log_flush_s": 0.05,
}


@dataclass
class RunningExecutor:
    config: ExecutorConfig
    stop: asyncio.Event
    task: asyncio.Task[None]


@asynccontextmanager
async def running_executor(
    db_url: str, *, settings: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[RunningExecutor]:
    """An executor inside the test's event loop; stopped (and its errors raised) on exit.

    `settings`: Settings fields (e.g. S3); other keywords override ExecutorConfig fields.
    """
    settings_ = load_settings(database_url=db_url, **(settings or {}))
    values = {**TEST_CONFIG, **overrides}
    config = ExecutorConfig.from_settings(settings_, **values)
    stop = asyncio.Event()
    task = asyncio.create_task(run_executor(settings_, config, stop))
    handle = RunningExecutor(config, stop, task)
    try:
        yield handle
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def executor_env(db_url: str, **extra: str) -> dict[str, str]:
    """Environment of an executor process on the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_DATABASE_URL": db_url,
            "SLUICE_LOG_FORMAT": "json",
            "SLUICE_LEASE_S": str(TEST_CONFIG["lease_s"]),
            "SLUICE_POLL_INTERVAL_S": str(TEST_CONFIG["poll_interval_s"]),
            "SLUICE_DRAIN_TIMEOUT_S": "0",
            # Several executors on one host: no probe server (it would want one fixed port).
            "SLUICE_METRICS_PORT": "0",
            "SLUICE_SECRET_KEY": TEST_SECRET_KEY,
            **extra,
        }
    )
    return env


@asynccontextmanager
async def executor_process(
    db_url: str, log_path: Path, **extra_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.executor` as a real process; SIGKILLed if still alive on exit."""
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.executor",
            cwd=str(ROOT),
            env=executor_env(db_url, **extra_env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def save(pool: Pool, spec: WorkflowSpec) -> LoadedVersion:
    """Save and publish a workflow; return its version as instance creation needs it."""
    async with pool.acquire() as conn:
        result = await workflow_repo.save(conn, DEFAULT_WS, spec, publish=True)
        return await workflow_repo.load_version(conn, result.workflow.id, result.version)


def flow(name: str, nodes: list[dict[str, Any]], **policy: Any) -> WorkflowSpec:
    """A manual workflow with the given nodes and policy fields."""
    return workflow(name, type="manual", nodes=nodes, policy=policy)


async def enqueue(
    pool: Pool,
    version: LoadedVersion,
    count: int = 1,
    *,
    priority: int | None = None,
    backfill_id: int | None = None,
    trigger_message: Any = None,
) -> list[int]:
    """Create `count` waiting instances (one transaction, created in list order)."""
    items = [
        NewInstance(
            version=version,
            kind="backfill" if backfill_id else "api",
            cyctime=NOW,
            priority=priority,
            backfill_id=backfill_id,
            trigger_message=trigger_message,
        )
        for _ in range(count)
    ]
    async with pool.acquire() as conn, conn.transaction():
        made = await create_instances(conn, items)
    return [m.id for m in made if m is not None]


async def wait_for(pool: Pool, query: str, *args: Any, timeout_s: float = WAIT_S) -> Any:
    """Wait until `query` returns a truthy first value; return it.

    Re-checked on every executor NOTIFY (and every 50 ms as a fallback for state that changes
    without one, such as lease expiry).
    """
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    conn = await pool.acquire()
    channels = ("sluice_instances", "sluice_nodes", "sluice_terminate")
    try:
        for channel in channels:
            await conn.add_listener(channel, wake)
        async with asyncio.timeout(timeout_s):
            while True:
                woken.clear()
                value = await pool.fetchval(query, *args)
                if value:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), 0.05)
    finally:
        for channel in channels:
            await conn.remove_listener(channel, wake)
        await pool.release(conn)


async def wait_instance(pool: Pool, instance_id: int, *states: str) -> str:
    """Wait until the instance is in one of `states` (default: any final state)."""
    wanted = list(states or ("succeeded", "failed", "terminated", "cancelled"))
    return str(
        await wait_for(
            pool,
            "SELECT state FROM instances WHERE id = $1 AND state = ANY($2::text[])",
            instance_id,
            wanted,
        )
    )


async def node_states(pool: Pool, instance_id: int) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT name, state FROM node_instances WHERE instance_id = $1", instance_id
    )
    return {r["name"]: r["state"] for r in rows}


async def attempts_of(pool: Pool, instance_id: int, node: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT a.* FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id
           WHERE n.instance_id = $1 AND n.name = $2 ORDER BY a.attempt""",
        instance_id,
        node,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_gone(pid: int, timeout_s: float) -> None:
    """Wait until process `pid` has exited (pidfd readability, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await asyncio.wait_for(gone.wait(), timeout_s)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def wait_request(pool: Pool, request_id: int) -> str:
    """Wait until an executor has carried out a terminate/rerun request: `done` or `failed`."""
    return str(
        await wait_for(
            pool,
            "SELECT state FROM instance_requests WHERE id = $1 AND state <> 'pending'",
            request_id,
        )
    )


@asynccontextmanager
async def carrying_out_requests(pool: Pool) -> AsyncIterator[None]:
    """The executor's requests loop alone (no dispatch): terminate and rerun requests are
    carried out while instances stay where the test put them."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            async with pool.acquire() as conn:
                await carry_out(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task
