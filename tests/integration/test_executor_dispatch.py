"""Dispatch order, weighting, admission limits, backfill parallelism, slots, overflow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from services.executor.claims import claim_nodes, unknown_groups
from services.executor.operations import promote_instances
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    enqueue,
    flow,
    running_executor,
    save,
    wait_for,
    wait_instance,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"


def max_overlap(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    """Most intervals open at once; an end at the same instant as a start comes first."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


async def claim_order(pool: Pool) -> list[tuple[int, str]]:
    """(instance id, node name) in the order attempts were claimed."""
    rows = await pool.fetch(
        """SELECT n.instance_id, n.name FROM attempts a
           JOIN node_instances n ON n.id = a.node_instance_id ORDER BY a.id"""
    )
    return [(r["instance_id"], r["name"]) for r in rows]


async def test_claims_follow_priority_then_age_under_contention(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("mixed", [shell_node("n")]))
    # Enqueued while no executor runs (paused), one at a time so created_at orders them.
    plan = [1, 5, 3, 8, 1, 7, 5, 8, 3, 1]
    ids = [(await enqueue(pool, version, priority=p))[0] for p in plan]
    async with running_executor(db_url, concurrency=1):
        for iid in ids:
            await wait_instance(pool, iid)
    expected = sorted(zip(plan, ids, strict=True), key=lambda pi: (-pi[0], pi[1]))
    assert [iid for iid, _ in await claim_order(pool)] == [iid for _, iid in expected]


@pytest.mark.parametrize(
    ("weighting", "order"),
    [
        ("downward", ["r", "c1", "c2", "x1", "x2", "x3"]),
        ("none", ["r", "x1", "x2", "x3", "c1", "c2"]),
    ],
)
async def test_downward_weighting_runs_the_critical_path_first(
    pool: Pool, db_url: str, weighting: str, order: list[str]
) -> None:
    nodes = [
        shell_node("r"),
        shell_node("x1"),
        shell_node("x2"),
        shell_node("x3"),
        shell_node("c1", ["r"]),
        shell_node("c2", ["c1"]),
    ]
    version = await save(pool, flow("chain", nodes, weighting=weighting))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, concurrency=1):
        assert await wait_instance(pool, iid) == "succeeded"
    assert [name for _, name in await claim_order(pool)] == order


async def test_claim_statement_orders_by_priority_weight_age_then_id(pool: Pool) -> None:
    low = await save(pool, flow("low", [shell_node("a")], priority=3))
    high = await save(pool, flow("high", [shell_node("a"), shell_node("b")], priority=7))
    deep = await save(
        pool,
        flow("deep", [shell_node("a"), shell_node("b", ["a"])], weighting="downward", priority=3),
    )
    first_low = (await enqueue(pool, low))[0]
    first_high = (await enqueue(pool, high))[0]
    second_low = (await enqueue(pool, low))[0]
    deep_id = (await enqueue(pool, deep))[0]
    async with pool.acquire() as conn:
        await promote_instances(conn)
        # Give the deep workflow's second node its turn: its weight is 1 + 3.
        await conn.execute(
            "UPDATE node_instances SET state = 'succeeded' WHERE instance_id = $1 AND name = 'a'",
            deep_id,
        )
        await conn.execute(
            """UPDATE node_instances n SET state = 'ready', instance_created_at = i.created_at
               FROM instances i WHERE i.id = n.instance_id AND n.instance_id = $1
               AND n.name = 'b'""",
            deep_id,
        )
        claimed: list[tuple[int, str]] = []
        while batch := await claim_nodes(conn, "x", lease_s=30, free=1, concurrency=100, batch=1):
            claimed.extend((c.instance_id, c.name) for c in batch)
    assert claimed == [
        (first_high, "a"),
        (first_high, "b"),
        (deep_id, "b"),
        (first_low, "a"),
        (second_low, "a"),
    ]


@pytest.mark.parametrize(
    ("max_parallel", "running", "priorities", "expected"),
    [
        (None, 0, [1, 1, 1], [0, 1, 2]),
        (2, 0, [1, 5, 1, 8], [1, 3]),
        (2, 1, [1, 5, 1, 8], [3]),
        (3, 3, [8], []),
        (1, 0, [3, 3, 3], [0]),
    ],
)
async def test_admission_respects_max_parallel_instances_in_priority_order(
    pool: Pool,
    max_parallel: int | None,
    running: int,
    priorities: list[int],
    expected: list[int],
) -> None:
    version = await save(
        pool, flow("limited", [shell_node("a")], max_parallel_instances=max_parallel)
    )
    already = await enqueue(pool, version, running)
    await pool.execute("UPDATE instances SET state = 'running' WHERE id = ANY($1)", already)
    ids = [(await enqueue(pool, version, priority=p))[0] for p in priorities]
    async with pool.acquire() as conn:
        promoted = await promote_instances(conn)
        assert await promote_instances(conn) == []
    assert sorted(promoted) == sorted(ids[i] for i in expected)
    ready = await pool.fetch(
        "SELECT instance_id FROM node_instances WHERE state = 'ready' ORDER BY instance_id"
    )
    assert [r["instance_id"] for r in ready] == sorted(promoted)


async def test_concurrent_admitters_never_exceed_the_limit(pool: Pool) -> None:
    version = await save(pool, flow("race", [shell_node("a")], max_parallel_instances=3))
    await enqueue(pool, version, 20)

    async def admit() -> int:
        async with pool.acquire() as conn:
            return len(await promote_instances(conn))

    counts = await asyncio.gather(*(admit() for _ in range(10)))
    assert sum(counts) == 3
    assert await pool.fetchval("SELECT count(*) FROM instances WHERE state = 'running'") == 3


async def add_backfill(pool: Pool, workflow_id: int, parallelism: int) -> int:
    return int(
        await pool.fetchval(
            """INSERT INTO backfills (workspace_id, workflow_id, start_at, end_at, parallelism)
               VALUES ($1, $2, now(), now(), $3) RETURNING id""",
            DEFAULT_WS,
            workflow_id,
            parallelism,
        )
    )


@pytest.mark.parametrize(
    ("max_parallel", "parallelism", "backfilled", "others", "backfill_running", "others_running"),
    [
        (None, 2, 5, 2, 2, 2),
        (3, 1, 4, 3, 1, 2),
        (2, 1, 3, 1, 1, 1),
        (None, 5, 3, 0, 3, 0),
    ],
)
async def test_backfill_parallelism_caps_its_instances_only(
    pool: Pool,
    max_parallel: int | None,
    parallelism: int,
    backfilled: int,
    others: int,
    backfill_running: int,
    others_running: int,
) -> None:
    version = await save(pool, flow("bf", [shell_node("a")], max_parallel_instances=max_parallel))
    backfill = await add_backfill(pool, version.workflow_id, parallelism)
    # Backfill instances are older: they come first in the waiting order.
    await enqueue(pool, version, backfilled, backfill_id=backfill)
    await enqueue(pool, version, others)
    async with pool.acquire() as conn:
        while await promote_instances(conn):
            pass
    rows = await pool.fetch(
        """SELECT backfill_id IS NOT NULL AS backfill, count(*) AS n FROM instances
           WHERE state = 'running' GROUP BY 1"""
    )
    counts = {r["backfill"]: r["n"] for r in rows}
    assert (counts.get(True, 0), counts.get(False, 0)) == (backfill_running, others_running)


async def test_running_instances_never_exceed_the_limit_with_two_executors(
    pool: Pool, db_url: str
) -> None:
    version = await save(
        pool,
        flow(
            "two",
            [shell_node("a", code="sleep 0.05"), shell_node("b", ["a"], code="sleep 0.05")],
            max_parallel_instances=2,
        ),
    )
    ids = await enqueue(pool, version, 12)
    async with running_executor(db_url), running_executor(db_url):
        for iid in ids:
            assert await wait_instance(pool, iid) == "succeeded"
    rows = await pool.fetch("SELECT started_at, finished_at FROM instances")
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in rows]) == 2


async def test_resource_group_slots_are_never_exceeded(pool: Pool, db_url: str) -> None:
    await pool.execute("INSERT INTO resource_groups (name, slots) VALUES ('tiny', 2)")
    nodes = [shell_node(f"n{i}", code="sleep 0.1", resource_group="tiny") for i in range(4)]
    nodes.append(shell_node("free", code="sleep 0.1"))
    version = await save(pool, flow("slots", nodes))
    ids = await enqueue(pool, version, 3)
    async with running_executor(db_url, concurrency=5), running_executor(db_url, concurrency=5):
        for iid in ids:
            assert await wait_instance(pool, iid) == "succeeded"
    rows = await pool.fetch(
        """SELECT n.resource_group, a.started_at, a.finished_at FROM attempts a
           JOIN node_instances n ON n.id = a.node_instance_id"""
    )
    tiny = [(r["started_at"], r["finished_at"]) for r in rows if r["resource_group"] == "tiny"]
    assert len(tiny) == 12
    assert max_overlap(tiny) == 2
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in rows]) > 2


async def test_concurrent_claimers_never_exceed_slots(pool: Pool) -> None:
    await pool.execute("INSERT INTO resource_groups (name, slots) VALUES ('tiny', 3)")
    version = await save(pool, flow("c", [shell_node("a", resource_group="tiny")]))
    await enqueue(pool, version, 20)
    async with pool.acquire() as conn:
        await promote_instances(conn)

    async def claim(executor: str) -> int:
        async with pool.acquire() as conn:
            got = await claim_nodes(conn, executor, lease_s=30, free=5, concurrency=5, batch=5)
            return len(got)

    counts = await asyncio.gather(*(claim(f"e{i}") for i in range(8)))
    assert sum(counts) == 3


async def test_executor_concurrency_is_enforced_in_the_claim(pool: Pool) -> None:
    version = await save(pool, flow("c", [shell_node("a")]))
    await enqueue(pool, version, 10)
    async with pool.acquire() as conn:
        await promote_instances(conn)
        first = await claim_nodes(conn, "e", lease_s=30, free=10, concurrency=4, batch=10)
        second = await claim_nodes(conn, "e", lease_s=30, free=10, concurrency=4, batch=10)
        other = await claim_nodes(conn, "f", lease_s=30, free=2, concurrency=4, batch=10)
    assert (len(first), len(second), len(other)) == (4, 0, 2)


BLOCK = "while [ ! -e {marker} ]; do sleep 0.02; done"


@pytest.mark.parametrize(
    ("overflow", "states"),
    [
        ("queue", ["succeeded", "succeeded", "succeeded"]),
        ("cancel_new", ["succeeded", "cancelled", "cancelled"]),
        ("replace", ["succeeded", "cancelled", "succeeded"]),
    ],
)
async def test_overflow_policies(
    pool: Pool, db_url: str, tmp_path: Path, overflow: str, states: list[str]
) -> None:
    marker = tmp_path / "go"
    node = shell_node("a", code=BLOCK.format(marker=marker))
    version = await save(pool, flow("over", [node], max_parallel_instances=1, overflow=overflow))
    async with running_executor(db_url):
        [first] = await enqueue(pool, version)
        await wait_for(
            pool, "SELECT 1 FROM node_instances WHERE instance_id = $1 AND state = 'running'", first
        )
        second = await enqueue(pool, version)
        third = await enqueue(pool, version)
        marker.touch()
        ids = [first, *second, *third]
        assert [await wait_instance(pool, i) for i in ids] == states


async def test_nodes_of_a_missing_group_wait_until_it_exists(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("later", [shell_node("a", resource_group="later")]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        await wait_for(
            pool,
            "SELECT 1 FROM node_instances WHERE state = 'ready' AND instance_id = $1",
            iid,
        )
        async with pool.acquire() as conn:
            assert await unknown_groups(conn) == ["later"]
        await pool.execute("INSERT INTO resource_groups (name, slots) VALUES ('later', 1)")
        assert await wait_instance(pool, iid) == "succeeded"
