"""Helpers for scheduler and backfill tests: scheduled specs, publish times, stored fires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import workflows as workflow_repo
from shared.db.pool import create_pool
from shared.models.workflows import WorkflowSpec
from tests.factories import DEFAULT_WS, shell_node, workflow

Pool: TypeAlias = "asyncpg.Pool[Any]"


def utc(text: str) -> datetime:
    """An aware UTC instant from ``2026-03-08T07:00[:00[.fff]]`` (no offset in the text)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def scheduled(
    name: str = "report",
    cron: str = "0 0 2 ? * *",
    timezone: str = "UTC",
    *,
    misfire: str = "run_once",
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    nodes: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> WorkflowSpec:
    """A scheduled workflow spec with one shell node unless `nodes` says otherwise."""
    schedule: dict[str, Any] = {"cron": cron, "timezone": timezone, "misfire": misfire}
    if start_at is not None:
        schedule["start_at"] = start_at.isoformat()
    if end_at is not None:
        schedule["end_at"] = end_at.isoformat()
    return workflow(
        name, type="scheduled", schedule=schedule, nodes=nodes or [shell_node("a")], **kw
    )


async def publish(pool: Pool, spec: WorkflowSpec, *, at: datetime | None = None) -> int:
    """Save and publish `spec`; with `at`, pretend the publish happened then."""
    async with pool.acquire() as conn:
        result = await workflow_repo.save(conn, DEFAULT_WS, spec, publish=True)
    if at is not None:
        await set_changed_at(pool, result.workflow.id, at)
    return result.workflow.id


async def set_changed_at(pool: Pool, workflow_id: int, at: datetime) -> None:
    """Move the workflow's last change (publish, freeze) to `at`: time travel by row update."""
    await pool.execute("UPDATE workflows SET updated_at = $2 WHERE id = $1", workflow_id, at)


@dataclass(frozen=True)
class StoredFire:
    workflow: str
    kind: str
    run_key: str
    cyctime: datetime
    bizdate: date | None
    state: str
    priority: int | None
    queue_priority: int
    backfill_id: int | None


async def stored_instances(pool: Pool, *, kind: str | None = None) -> list[StoredFire]:
    """Every instance (optionally of one kind) in the executor's start order."""
    rows = await pool.fetch(
        "SELECT w.name AS workflow, i.kind, i.run_key, i.cyctime, i.bizdate, i.state, "
        "i.priority, i.queue_priority, i.backfill_id "
        "FROM instances i JOIN workflows w ON w.id = i.workflow_id "
        "WHERE $1::text IS NULL OR i.kind = $1 "
        "ORDER BY i.queue_priority DESC, i.created_at, i.id",
        kind,
    )
    return [StoredFire(**dict(r)) for r in rows]


async def state_of(pool: Pool, workflow_id: int) -> asyncpg.Record | None:
    """The workflow's schedule_state row."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT last_fire_at, next_fire_at, schedule FROM schedule_state WHERE workflow_id = $1",
        workflow_id,
    )
    return row


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10) -> None:
    """Poll `check` until it holds; fail after `timeout_s` (waits for a result, never a race)."""
    interval = 0.02
    for _ in range(int(timeout_s / interval)):
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout_s} s")


@pytest.fixture
async def second_pool(db_url: str) -> AsyncIterator[Pool]:
    """Another pool on the test database: a second scheduler replica's own connections."""
    p = await create_pool(db_url, min_size=1, max_size=4, application_name="replica-b")
    try:
        yield p
    finally:
        await p.close()
