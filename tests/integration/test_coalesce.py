"""Coalescing windows against real PostgreSQL: one instance per window, every event in exactly
one, duplicates stay duplicates, and a closer that dies mid-close loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared import intake
from shared.db import coalesce_windows
from shared.db import instances as instance_repo
from shared.db import workflows as workflow_repo
from shared.db.errors import Conflict
from shared.db.pool import connect
from shared.models.events import IncomingEvent
from tests.factories import DEFAULT_WS, add_trigger, add_workflow, s3_event, s3_trigger, workflow

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def bind(pool: Pool, *workflows: str, **coalesce: Any) -> None:
    option = {"window_s": 3600, **coalesce}
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", coalesce=option))
        for name in workflows or ("wf",):
            await add_workflow(conn, workflow(name, trigger="files"))


def upload(n: int, prefix: str = "in") -> IncomingEvent:
    return s3_event(key=f"{prefix}/{n:05}.csv", etag=f"e{n}")


async def expire_windows(pool: Pool) -> None:
    """Move time: the open windows' time is up."""
    await pool.execute(
        "UPDATE coalesce_windows SET closes_at = now() - interval '1 second' "
        "WHERE closed_at IS NULL"
    )


async def keys_of(pool: Pool, instance_id: int) -> list[str]:
    messages = await coalesce_windows.instance_messages(pool, instance_id)
    assert messages is not None
    return [m["data"]["s3"]["object"]["key"] for m in messages]


async def test_events_in_one_window_make_one_instance(pool: Pool) -> None:
    await bind(pool)
    results = [await intake.admit(pool, upload(n)) for n in range(5)]
    outcomes = [r[0].outcomes[0] for r in results]
    assert {o.outcome for o in outcomes} == {"coalesced"}
    [instance_id] = {i for o in outcomes for i in o.instance_ids}
    assert "event 5 of at most 1000" in (outcomes[4].detail or "")
    # The window is open: nothing runs yet.
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0

    await expire_windows(pool)
    assert await coalesce_windows.close_due(pool) == [instance_id]
    assert await coalesce_windows.close_due(pool) == []
    async with pool.acquire() as conn:
        out = await instance_repo.get(conn, DEFAULT_WS, instance_id)
    assert (out.kind, out.state) == ("triggered", "waiting")
    assert out.coalesced_events == 5
    assert out.coalesced_event_ids == [r[0].event_id for r in results]
    # The first event is the instance's own: message, event id, cyctime.
    assert out.event_id == results[0][0].event_id
    assert out.trigger_message["data"]["s3"]["object"]["key"] == "in/00000.csv"
    assert await keys_of(pool, instance_id) == [f"in/{n:05}.csv" for n in range(5)]
    # The audit of every event names the instance.
    rows = await pool.fetch("SELECT outcome, instance_ids FROM event_outcomes ORDER BY event_id")
    assert [(r["outcome"], r["instance_ids"]) for r in rows] == [("coalesced", [instance_id])] * 5


async def test_max_events_closes_the_window_early(pool: Pool) -> None:
    await bind(pool, max_events=3)
    results = await intake.admit_batch(pool, [upload(n) for n in range(7)])
    ids = [r[0].outcomes[0].instance_ids for r in results]
    assert ids[0] == ids[2] != ids[3] == ids[5] != ids[6]
    rows = await pool.fetch("SELECT id, events, closed_at FROM coalesce_windows ORDER BY id")
    assert [(r["events"], r["closed_at"] is not None) for r in rows] == [
        (3, True),
        (3, True),
        (1, False),
    ]
    instances = await pool.fetch("SELECT id FROM instances ORDER BY id")
    assert len(instances) == 2
    assert await keys_of(pool, instances[0]["id"]) == [f"in/{n:05}.csv" for n in range(3)]
    assert await keys_of(pool, instances[1]["id"]) == [f"in/{n:05}.csv" for n in range(3, 6)]
    # Two more events fill the third window, which closes in the admission of the last.
    await intake.admit(pool, upload(7))
    assert await pool.fetchval("SELECT count(*) FROM instances") == 2
    [result] = await intake.admit(pool, upload(8))
    assert result.outcomes[0].instance_ids == ids[6]
    assert "(closed)" in (result.outcomes[0].detail or "")
    assert await pool.fetchval("SELECT count(*) FROM instances") == 3
    assert await keys_of(pool, ids[6][0]) == [f"in/{n:05}.csv" for n in range(6, 9)]


async def test_an_admission_closes_a_due_window_and_opens_the_next(pool: Pool) -> None:
    await bind(pool)
    [a] = await intake.admit(pool, upload(1))
    await expire_windows(pool)
    [b] = await intake.admit(pool, upload(2))
    assert a.outcomes[0].instance_ids != b.outcomes[0].instance_ids
    [closed] = await pool.fetch("SELECT id FROM instances")
    assert [closed["id"]] == a.outcomes[0].instance_ids
    assert await keys_of(pool, closed["id"]) == ["in/00001.csv"]
    assert await pool.fetchval("SELECT count(*) FROM coalesce_windows WHERE closed_at IS NULL") == 1


async def test_a_redelivery_is_a_duplicate_naming_the_instance(pool: Pool) -> None:
    await bind(pool)
    [first] = await intake.admit(pool, upload(1))
    await intake.admit(pool, upload(2))
    [again] = await intake.admit(pool, upload(2))
    assert again.outcomes[0].outcome == "duplicate"
    assert again.outcomes[0].instance_ids == first.outcomes[0].instance_ids
    await expire_windows(pool)
    await coalesce_windows.close_due(pool)
    [late] = await intake.admit(pool, upload(1))
    assert late.outcomes[0].outcome == "duplicate"
    assert late.outcomes[0].instance_ids == first.outcomes[0].instance_ids
    [instance_id] = first.outcomes[0].instance_ids
    assert await keys_of(pool, instance_id) == ["in/00001.csv", "in/00002.csv"]
    assert await pool.fetchval("SELECT count(*) FROM coalesce_members") == 2


async def test_each_bound_workflow_gets_its_own_window(pool: Pool) -> None:
    await bind(pool, "w1", "w2", max_events=2)
    [[a], [b]] = await intake.admit_batch(pool, [upload(1), upload(2)])
    assert a.outcomes[0].instance_ids == b.outcomes[0].instance_ids
    assert len(a.outcomes[0].instance_ids) == 2
    rows = await pool.fetch(
        "SELECT w.name, i.id FROM instances i JOIN workflows w ON w.id = i.workflow_id "
        "ORDER BY w.name"
    )
    assert [r["name"] for r in rows] == ["w1", "w2"]
    for r in rows:
        assert await keys_of(pool, r["id"]) == ["in/00001.csv", "in/00002.csv"]


@pytest.mark.timeout(180)
async def test_concurrent_admissions_put_each_event_in_exactly_one_window(pool: Pool) -> None:
    await bind(pool, max_events=50)
    events = [upload(n) for n in range(400)]
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]

    async def deliver(share: list[list[IncomingEvent]]) -> None:
        for batch in share:
            await intake.admit_batch(pool, batch)

    # Eight intakes at once, and every event delivered twice.
    await asyncio.gather(*(deliver(batches[i::4]) for i in range(4)))
    await asyncio.gather(*(deliver(batches[i::4]) for i in range(4)))
    await expire_windows(pool)
    await coalesce_windows.close_due(pool)
    instances = [r["id"] for r in await pool.fetch("SELECT id FROM instances ORDER BY id")]
    assert len(instances) == 8
    seen = [k for i in instances for k in await keys_of(pool, i)]
    assert sorted(seen) == sorted(f"in/{n:05}.csv" for n in range(400))
    outcomes = await pool.fetch(
        "SELECT outcome, count(*) AS n FROM event_outcomes GROUP BY outcome ORDER BY outcome"
    )
    assert {r["outcome"]: r["n"] for r in outcomes} == {"coalesced": 400, "duplicate": 400}


async def test_a_closer_killed_before_commit_leaves_the_window_to_the_next(
    pool: Pool, db_url: str
) -> None:
    await bind(pool)
    await intake.admit_batch(pool, [upload(n) for n in range(3)])
    await expire_windows(pool)
    victim = await connect(db_url, "dying-closer")
    try:
        tx = victim.transaction()
        await tx.start()
        # The dying closer has created the instance and marked the window, but not committed.
        closing = await coalesce_windows.close_due(victim)
        assert len(closing) == 1
        # Another closer skips the locked window instead of closing it twice.
        assert await coalesce_windows.close_due(pool) == []
        pid = victim.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        victim.terminate()
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0

    async def closed() -> list[int]:
        while True:
            done = await coalesce_windows.close_due(pool)
            if done:
                return done
            await asyncio.sleep(0.05)

    async with asyncio.timeout(20):
        assert await closed() == closing
    assert await keys_of(pool, closing[0]) == [f"in/{n:05}.csv" for n in range(3)]


async def test_a_workflow_with_an_open_window_cannot_be_deleted(pool: Pool) -> None:
    await bind(pool)
    await intake.admit(pool, upload(1))
    async with pool.acquire() as conn:
        with pytest.raises(Conflict, match="1 waiting or running"):
            await workflow_repo.delete(conn, DEFAULT_WS, "wf")
    await expire_windows(pool)
    [instance_id] = await coalesce_windows.close_due(pool)
    await pool.execute("UPDATE instances SET state = 'succeeded' WHERE id = $1", instance_id)
    async with pool.acquire() as conn:
        await workflow_repo.delete(conn, DEFAULT_WS, "wf")
    assert await pool.fetchval("SELECT count(*) FROM coalesce_windows") == 0
