"""Coalescing windows in PostgreSQL: joining them at admission, closing them into instances.

Contract 2 for coalesced events: a member row is written in the admission's transaction, beside
the admission it belongs to, and `(admission_id, workflow_id)` is UNIQUE, so an event joins one
window per workflow or none (the transaction rolled back and the source redelivers). A window
closes in one transaction that creates its instance, whose id was reserved when the window
opened, and marks it closed, under the window's row lock: whoever closes it (an admission that
finds it due or full, or the scheduler's sweep of expired windows) can crash at any point and
the next one closes it exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from shared import metrics
from shared.coalesce import OpenWindow, closes_at, plan
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.db.workflows import LoadedVersion
from shared.models.triggers import Coalesce

Q = load(__file__)
log = structlog.get_logger("sluice.coalesce")
# Opening a window can lose to a concurrent admission's; the retry then locks that window. More
# losses in a row than this would mean windows closing faster than they open.
_OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class Joining:
    """One admitted event joining the window of one workflow bound to its trigger."""

    trigger_id: int
    option: Coalesce
    version: LoadedVersion
    admission_id: int
    event_id: int
    message: Any


@dataclass(frozen=True)
class Joined:
    """Where a Joining went: its window, the window's instance, its place in the window."""

    window_id: int
    instance_id: int
    seq: int
    max_events: int
    closed: bool


def _open(row: asyncpg.Record) -> OpenWindow:
    return OpenWindow(
        opened_at=row["opened_at"],
        closes_at=row["closes_at"],
        max_events=row["max_events"],
        events=row["events"],
    )


async def join(conn: Connection, items: list[Joining]) -> list[Joined]:
    """Add each item to the open window of its (trigger, workflow), in the caller's transaction.

    Items of one pair join in list order; a due window is closed first and a full one closed at
    once, each into its instance. Pairs are locked in a fixed order so concurrent batches cannot
    deadlock on each other's windows.
    """
    if not items:
        return []
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    versions: dict[tuple[int, int], LoadedVersion] = {}
    for index, item in enumerate(items):
        groups[(item.trigger_id, item.version.workflow_id)].append(index)
        versions[(item.version.workflow_id, item.version.version)] = item.version
    out: list[Joined | None] = [None] * len(items)
    now: datetime = await conn.fetchval(Q["clock"])
    for (trigger_id, _), indexes in sorted(groups.items()):
        first = items[indexes[0]]
        row: asyncpg.Record | None = await _lock_or_open(conn, trigger_id, first, now)
        assert row is not None
        decided = plan(_open(row), len(indexes), now, first.option)
        if decided.close_open:
            await _close(conn, row, versions)
            row = None
        start = 0
        for segment in decided.segments:
            if segment.new or row is None:
                # The window before it was closed above, so this opens a fresh one.
                row = await _lock_or_open(conn, trigger_id, first, now)
            share = indexes[start : start + segment.count]
            start += segment.count
            await conn.execute(
                Q["add_members"],
                row["id"],
                row["events"],
                row["workflow_id"],
                [items[i].admission_id for i in share],
                [items[i].event_id for i in share],
                [items[i].message for i in share],
            )
            for n, index in enumerate(share):
                out[index] = Joined(
                    window_id=row["id"],
                    instance_id=row["instance_id"],
                    seq=row["events"] + n + 1,
                    max_events=row["max_events"],
                    closed=segment.closes,
                )
            row = await conn.fetchrow(Q["count_members"], row["id"], len(share))
            assert row is not None
            if segment.closes:
                await _close(conn, row, versions)
                row = None
    return [j for j in out if j is not None]


async def _lock_or_open(
    conn: Connection, trigger_id: int, item: Joining, now: datetime
) -> asyncpg.Record:
    """The open window of the pair, locked; opened at `now` when there is none."""
    workflow_id = item.version.workflow_id
    for _ in range(_OPEN_ATTEMPTS):
        row: asyncpg.Record | None = await conn.fetchrow(
            Q["lock_open_window"], trigger_id, workflow_id
        )
        if row is not None:
            return row
        opened: asyncpg.Record | None = await conn.fetchrow(
            Q["open_window"],
            trigger_id,
            workflow_id,
            item.version.version,
            now,
            closes_at(now, item.option),
            item.option.max_events,
        )
        if opened is not None:
            metrics.COALESCE_WINDOWS.labels("opened").inc()
            return opened
    raise RuntimeError(f"could not open a coalescing window for workflow {workflow_id}")


async def _close(
    conn: Connection, window: asyncpg.Record, versions: dict[tuple[int, int], LoadedVersion]
) -> int:
    """Create the window's instance and mark it closed (the caller holds its row lock)."""
    first = await conn.fetchrow(Q["first_member"], window["id"])
    if first is None:
        # Members are written in the transaction that opens a window: an empty one never commits.
        raise RuntimeError(f"coalescing window {window['id']} has no events")
    key = (window["workflow_id"], window["version"])
    if key not in versions:
        versions[key] = await workflow_repo.load_version(conn, *key)
    version = versions[key]
    made = await create_instances(
        conn,
        [
            NewInstance(
                id=window["instance_id"],
                version=version,
                kind="triggered",
                cyctime=first["received_at"],
                trigger_message=first["message"],
                event_id=first["event_id"],
                admission_id=first["admission_id"],
            )
        ],
    )
    await conn.execute(Q["mark_closed"], window["id"])
    metrics.INSTANCES_CREATED.labels("triggered").inc()
    metrics.COALESCE_WINDOWS.labels("closed").inc()
    created = made[0]
    log.info(
        "coalesce_window_closed",
        window_id=window["id"],
        instance_id=window["instance_id"],
        workflow=version.name,
        events=window["events"],
        state=created.state if created is not None else None,
    )
    return int(window["instance_id"])


async def close_due(pool: Executor, limit: int = 100) -> list[int]:
    """Close windows whose time is up, in one transaction; returns their instance ids.

    Windows another closer (or an admission) holds are skipped and left to it.
    """
    if not isinstance(pool, asyncpg.Pool):
        return await _close_due_in(pool, limit)
    async with pool.acquire() as conn:
        return await _close_due_in(conn, limit)


async def _close_due_in(conn: Connection, limit: int) -> list[int]:
    async with conn.transaction():
        rows = await conn.fetch(Q["lock_due_windows"], limit)
        versions: dict[tuple[int, int], LoadedVersion] = {}
        return [await _close(conn, row, versions) for row in rows]


async def next_due(conn: Executor) -> datetime | None:
    """When the earliest open window closes (None: no window is open)."""
    value: datetime | None = await conn.fetchval(Q["next_due"])
    return value


async def earlier_instances(
    conn: Connection, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], list[int]]:
    """For redelivered events: the instances their first delivery's windows close into."""
    if not keys:
        return {}
    rows = await conn.fetch(Q["admission_windows"], [k[0] for k in keys], [k[1] for k in keys])
    return {(r["trigger_id"], r["dedup_key"]): list(r["instance_ids"]) for r in rows}


async def instance_messages(conn: Executor, instance_id: int) -> list[Any] | None:
    """The trigger messages of a coalesced instance in admission order; None when the instance
    did not come from a window."""
    rows = await conn.fetch(Q["instance_messages"], instance_id)
    return [r["message"] for r in rows] if rows else None
