"""Priority aging (policy.aging_s): levels gained in the claim and admission statements."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import pytest

from services.executor.claims import claim_nodes
from services.executor.operations import promote_instances
from shared.db import instances as instance_repo
from shared.db.pool import Connection
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import enqueue, flow, save

Pool: TypeAlias = "asyncpg.Pool[Any]"


@pytest.mark.parametrize(
    ("base", "waited", "aging", "rank"),
    [
        (1, 0.0, 60.0, 0),
        (8, 0.0, 60.0, 4),
        (8, 0.0, None, 4),
        (1, 240.0, 60.0, 4),
        (1, 300.0, 60.0, 5),
        (7, 61.0, 60.0, 4),
        (1, 1e12, 1.0, 10**12),
    ],
)
async def test_aging_rank_counts_past_the_top_level(
    pool: Pool, base: int, waited: float, aging: float | None, rank: int
) -> None:
    got = await pool.fetchval("SELECT sluice_aging_rank($1, $2, $3)", base, waited, aging)
    assert got == rank


@pytest.mark.parametrize(
    ("base", "waited", "aging", "level"),
    [
        (1, 0.0, 60.0, 1),
        (1, 59.9, 60.0, 1),
        (1, 60.0, 60.0, 3),
        (1, 130.0, 60.0, 5),
        (1, 240.0, 60.0, 8),
        (1, 1e12, 60.0, 8),
        (3, 61.0, 60.0, 5),
        (7, 61.0, 60.0, 8),
        (8, 600.0, 60.0, 8),
        (1, 1e6, None, 1),
        (5, -30.0, 60.0, 5),
    ],
)
async def test_aged_priority_levels(
    pool: Pool, base: int, waited: float, aging: float | None, level: int
) -> None:
    got = await pool.fetchval("SELECT sluice_aged_priority($1, $2, $3)", base, waited, aging)
    assert got == level


async def ready_all(conn: Connection, instance_ids: list[int], age_s: float) -> None:
    """Make the instances' nodes ready as admission would, `age_s` seconds ago."""
    await conn.execute(
        """UPDATE node_instances n
           SET state = 'ready', instance_created_at = i.created_at,
               ready_at = now() - make_interval(secs => $2)
           FROM instances i WHERE i.id = n.instance_id AND n.instance_id = ANY($1::bigint[])""",
        instance_ids,
        age_s,
    )
    await conn.execute(
        "UPDATE instances SET state = 'running' WHERE id = ANY($1::bigint[])", instance_ids
    )


async def drain(conn: Connection) -> list[int]:
    claimed: list[int] = []
    while batch := await claim_nodes(conn, "x", lease_s=30, free=1, concurrency=100, batch=1):
        claimed.extend(c.instance_id for c in batch)
    return claimed


async def test_a_waiting_node_climbs_one_level_per_aging_interval(pool: Pool) -> None:
    aging = await save(pool, flow("aging", [shell_node("a")], priority=1, aging_s=60))
    static = await save(pool, flow("static", [shell_node("a")], priority=1))
    mid = await save(pool, flow("mid", [shell_node("a")], priority=3))
    top = await save(pool, flow("top", [shell_node("a")], priority=7))
    [aged] = await enqueue(pool, aging)
    [old_static] = await enqueue(pool, static)
    [fresh_aging] = await enqueue(pool, aging)
    [mid_id] = await enqueue(pool, mid)
    [top_id] = await enqueue(pool, top)
    async with pool.acquire() as conn:
        await ready_all(conn, [fresh_aging, mid_id, top_id], 0)
        # Two intervals waited: 1 -> 3 -> 5, above `mid` (3) and still below `top` (7). A node
        # without aging that waited as long keeps its level.
        await ready_all(conn, [aged, old_static], 130)
        detail = await instance_repo.get(conn, DEFAULT_WS, aged)
        assert [n.effective_priority for n in detail.nodes] == [5]
        assert detail.aging_s == 60
        assert await drain(conn) == [top_id, aged, mid_id, old_static, fresh_aging]


async def test_aging_reaches_the_top_level_and_then_ties_break_by_age(pool: Pool) -> None:
    low = await save(pool, flow("low", [shell_node("a")], priority=1, aging_s=10))
    high = await save(pool, flow("high", [shell_node("a")], priority=8))
    [low_id] = await enqueue(pool, low)
    highs = await enqueue(pool, high, 3)
    async with pool.acquire() as conn:
        await ready_all(conn, highs, 0)
        await ready_all(conn, [low_id], 35)
        # 1 -> 3 -> 5 -> 7 -> 8 needs four intervals: at 35 s (7) it is still below the 8s.
        assert (await drain(conn))[-1] == low_id
    [low_2] = await enqueue(pool, low)
    highs = await enqueue(pool, high, 3)
    async with pool.acquire() as conn:
        await ready_all(conn, highs, 0)
        await ready_all(conn, [low_2], 41)
        # Level 8 reached; it was created first, so it leads the 8s.
        assert (await drain(conn))[0] == low_2
    highs = await enqueue(pool, high, 3)
    [low_3] = await enqueue(pool, low)
    async with pool.acquire() as conn:
        await ready_all(conn, highs, 0)
        await ready_all(conn, [low_3], 51)
        # Five intervals: past 8, it goes ahead of older priority-8 work that does not age, while
        # it shows as 8.
        detail = await instance_repo.get(conn, DEFAULT_WS, low_3)
        assert [n.effective_priority for n in detail.nodes] == [8]
        assert (await drain(conn))[0] == low_3


async def test_a_retry_waiting_for_its_delay_does_not_age(pool: Pool) -> None:
    low = await save(pool, flow("low", [shell_node("a")], priority=1, aging_s=10))
    high = await save(pool, flow("high", [shell_node("a")], priority=5))
    [low_id] = await enqueue(pool, low)
    [high_id] = await enqueue(pool, high)
    async with pool.acquire() as conn:
        await ready_all(conn, [low_id, high_id], 0)
        # A retry is ready with `ready_at` at the end of its delay: it ages from then on.
        await conn.execute(
            "UPDATE node_instances SET ready_at = now() + interval '1 hour' WHERE instance_id = $1",
            low_id,
        )
        assert await drain(conn) == [high_id, low_id]


async def test_admission_ages_waiting_instances(pool: Pool) -> None:
    version = await save(
        pool, flow("queue", [shell_node("a")], max_parallel_instances=1, aging_s=60)
    )
    [low] = await enqueue(pool, version, priority=1)
    highs = await enqueue(pool, version, 2, priority=5)

    async def backdate(instance_id: int, seconds: float) -> None:
        await pool.execute(
            "UPDATE instances SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
            instance_id,
            seconds,
        )

    async def promote_one() -> int:
        async with pool.acquire() as conn:
            [promoted] = await promote_instances(conn)
            # Free the place again, as a finished instance would.
            await conn.execute("UPDATE instances SET state = 'succeeded' WHERE id = $1", promoted)
        return int(promoted)

    # One interval waited: 1 -> 3, still below the 5s.
    await backdate(low, 90)
    assert (await instance_repo.get(pool, DEFAULT_WS, low)).effective_priority == 3
    assert await promote_one() == highs[0]
    # Two intervals: 5, a tie with the remaining 5, broken by age.
    await backdate(low, 150)
    assert (await instance_repo.get(pool, DEFAULT_WS, low)).effective_priority == 5
    assert await promote_one() == low
    assert await promote_one() == highs[1]
    # Promoted: the instance shows the queue priority it keeps.
    assert (await instance_repo.get(pool, DEFAULT_WS, low)).effective_priority == 1


async def test_admission_without_aging_is_strict(pool: Pool) -> None:
    version = await save(pool, flow("strict", [shell_node("a")], max_parallel_instances=2))
    [low] = await enqueue(pool, version, priority=1)
    highs = await enqueue(pool, version, 3, priority=5)
    await pool.execute(
        "UPDATE instances SET created_at = now() - interval '30 days' WHERE id = $1", low
    )
    async with pool.acquire() as conn:
        promoted = await promote_instances(conn)
    assert sorted(promoted) == highs[:2]
    assert (await instance_repo.get(pool, DEFAULT_WS, low)).aging_s is None


async def test_aging_rows_never_exceed_a_groups_free_slots(pool: Pool) -> None:
    await pool.execute("INSERT INTO resource_groups (name, slots) VALUES ('two', 2)")
    low = await save(
        pool, flow("low", [shell_node("a")], priority=1, aging_s=10, resource_group="two")
    )
    high = await save(pool, flow("high", [shell_node("a")], priority=8, resource_group="two"))
    lows = await enqueue(pool, low, 3)
    highs = await enqueue(pool, high, 3)
    async with pool.acquire() as conn:
        await ready_all(conn, [*lows, *highs], 0)
        # The executor could take 10; the group has 2 slots: the two priority-8 heads win.
        claimed = await claim_nodes(conn, "x", lease_s=30, free=10, concurrency=100, batch=10)
        assert sorted(c.instance_id for c in claimed) == highs[:2]
        assert await claim_nodes(conn, "x", lease_s=30, free=10, concurrency=100, batch=10) == []
