"""Claims lock resource groups, not the cluster: replicas claiming from different groups do not
wait for each other, and a group's slots stay exact however its claims interleave."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeAlias

import asyncpg

from services.executor.claims import CLAIM_LOCK_CLASS, claim_nodes, claim_nodes_detail
from services.executor.operations import promote_instances
from shared.db.pool import Connection
from tests.factories import shell_node
from tests.support.executor import enqueue, flow, save

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def ready_in_groups(pool: Pool, groups: dict[str, int], per_group: int) -> None:
    for name, slots in groups.items():
        await pool.execute("INSERT INTO resource_groups (name, slots) VALUES ($1, $2)", name, slots)
        version = await save(pool, flow(f"wf_{name}", [shell_node("a", resource_group=name)]))
        await enqueue(pool, version, per_group)
    async with pool.acquire() as conn:
        await promote_instances(conn)


async def hold_group_lock(conn: Connection, group: str) -> None:
    """What a replica in the middle of a claim from `group` holds."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashtext($2))", CLAIM_LOCK_CLASS, group
    )


async def test_a_group_being_claimed_from_elsewhere_is_skipped_not_waited_for(pool: Pool) -> None:
    await ready_in_groups(pool, {"g1": 10, "g2": 10}, 3)
    async with pool.acquire() as other, other.transaction():
        await hold_group_lock(other, "g1")
        async with pool.acquire() as conn:
            claimed, skipped = await asyncio.wait_for(
                claim_nodes_detail(conn, "e", lease_s=30, free=10, concurrency=10, batch=10), 10
            )
    assert skipped
    assert sorted(c.resource_group for c in claimed) == ["g2", "g2", "g2"]
    async with pool.acquire() as conn:
        rest, skipped = await claim_nodes_detail(
            conn, "e", lease_s=30, free=10, concurrency=10, batch=10
        )
    assert not skipped
    assert sorted(c.resource_group for c in rest) == ["g1", "g1", "g1"]


async def test_a_claimer_waits_when_every_ready_group_is_busy_and_counts_what_it_took(
    pool: Pool,
) -> None:
    await ready_in_groups(pool, {"tiny": 2}, 5)
    async with pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        await hold_group_lock(other, "tiny")
        # The other replica's claim fills both slots; it commits only later.
        await other.execute(
            """UPDATE node_instances SET state = 'running', executor = 'other'
               WHERE id IN (SELECT id FROM node_instances WHERE resource_group = 'tiny'
                            ORDER BY id LIMIT 2)"""
        )
        async with pool.acquire() as conn:
            claim = asyncio.create_task(
                claim_nodes(conn, "e", lease_s=30, free=5, concurrency=5, batch=5)
            )
            deadline = time.monotonic() + 10
            while not await pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"""
            ):
                assert time.monotonic() < deadline, "the claim never waited for the lock"
                assert not claim.done()
                await asyncio.sleep(0.01)
            assert not claim.done()
            await tx.commit()
            claimed = await asyncio.wait_for(claim, 10)
    # Its snapshot was taken after the other claim committed: no slot was left.
    assert claimed == []
    running = await pool.fetchval(
        "SELECT count(*) FROM node_instances WHERE resource_group = 'tiny' AND state = 'running'"
    )
    assert running == 2


async def test_replicas_claiming_two_groups_at_once_keep_each_groups_slots(pool: Pool) -> None:
    await ready_in_groups(pool, {"g1": 3, "g2": 4}, 12)

    async def claim(executor: str) -> list[str]:
        async with pool.acquire() as conn:
            got = await claim_nodes(conn, executor, lease_s=30, free=6, concurrency=6, batch=6)
            return [c.resource_group for c in got]

    rounds = await asyncio.gather(*(claim(f"e{i}") for i in range(8)))
    taken = [g for r in rounds for g in r]
    assert taken.count("g1") <= 3
    assert taken.count("g2") <= 4
    # A group skipped while busy is claimed from by the next round (the executor's loop claims
    # again at once after a round that skipped one).
    taken += await claim("late")
    assert (taken.count("g1"), taken.count("g2")) == (3, 4)
