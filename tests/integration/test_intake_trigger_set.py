"""Intake matches against the in-memory trigger set: verdicts stored for index candidates only
once many triggers watch a source, the rest explained on read, and every change seen at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg

from shared import intake
from shared.db import events as event_repo
from shared.db import triggers as trigger_repo
from shared.trigger_set import FULLY_AUDITED
from tests.factories import (
    add_trigger,
    add_workflow,
    kafka_event,
    kafka_trigger,
    s3_event,
    s3_trigger,
    workflow,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"
MANY = FULLY_AUDITED + 24


async def stored(pool: Pool, event_id: int) -> list[tuple[str | None, str]]:
    rows = await pool.fetch(
        "SELECT trigger_name, outcome FROM event_outcomes WHERE event_id = $1 ORDER BY seq",
        event_id,
    )
    return [(r["trigger_name"], r["outcome"]) for r in rows]


async def many_s3_triggers(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(MANY):
            await add_trigger(conn, s3_trigger(f"t{i:02}", "data", key_pattern=f"other{i}/*"))
        await add_trigger(conn, s3_trigger("hit", "data", key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("wf", trigger="hit"))


async def test_many_triggers_on_a_bucket_store_the_candidates_and_explain_the_rest_on_read(
    pool: Pool,
) -> None:
    await many_s3_triggers(pool)
    event = s3_event(key="input/a.csv").model_copy(update={"received_at": datetime.now(UTC)})
    [result] = await intake.admit(pool, event)
    assert [(o.trigger, o.outcome) for o in result.outcomes] == [("hit", "admitted")]
    assert len(result.instance_ids) == 1
    assert await stored(pool, result.event_id) == [("hit", "admitted")]
    read = await event_repo.get(pool, 1, result.event_id)
    by_trigger = {o.trigger: o for o in read.outcomes}
    assert len(read.outcomes) == MANY + 1
    assert by_trigger["hit"].outcome == "admitted"
    assert by_trigger["t07"].outcome == "filtered"
    assert by_trigger["t07"].detail == (
        "key 'input/a.csv' does not match 'other7/*' (worked out when read)"
    )


async def test_an_event_no_candidate_can_match_keeps_one_summary_row(pool: Pool) -> None:
    await many_s3_triggers(pool)
    event = s3_event(key="elsewhere/a.csv").model_copy(update={"received_at": datetime.now(UTC)})
    [result] = await intake.admit(pool, event)
    [summary] = result.outcomes
    assert (summary.trigger, summary.outcome) == (None, "filtered")
    assert f"none of the {MANY + 1} triggers on 'data'" in (summary.detail or "")
    assert await stored(pool, result.event_id) == [(None, "filtered")]
    read = await event_repo.get(pool, 1, result.event_id)
    assert len(read.outcomes) == MANY + 2
    assert {o.outcome for o in read.outcomes} == {"filtered"}


async def test_keyed_kafka_triggers_are_candidates_only_for_their_key(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(MANY):
            await add_trigger(conn, kafka_trigger(f"k{i:02}", "acts", key=f"key{i}"))
        await add_trigger(conn, kafka_trigger("any", "acts"))
        await add_workflow(conn, workflow("wf", trigger="k03"))
    event = kafka_event(topic="acts", key="key3").model_copy(
        update={"received_at": datetime.now(UTC)}
    )
    [result] = await intake.admit(pool, event)
    assert sorted((o.trigger, o.outcome) for o in result.outcomes) == [
        ("any", "no_workflow"),
        ("k03", "admitted"),
    ]
    read = await event_repo.get(pool, 1, result.event_id)
    by_trigger = {o.trigger: o for o in read.outcomes}
    assert len(read.outcomes) == MANY + 1
    assert by_trigger["k04"].detail == "key 'key3' is not 'key4' (worked out when read)"


async def test_few_triggers_keep_a_stored_verdict_each(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(FULLY_AUDITED - 1):
            await add_trigger(conn, s3_trigger(f"t{i:02}", "data", key_pattern=f"other{i}/*"))
        await add_trigger(conn, s3_trigger("hit", "data", key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("wf", trigger="hit"))
    [result] = await intake.admit(pool, s3_event(key="input/a.csv"))
    assert len(await stored(pool, result.event_id)) == FULLY_AUDITED


async def test_every_trigger_change_is_seen_by_the_next_batch(pool: Pool) -> None:
    def next_event(n: int) -> Any:
        return kafka_event(topic="fresh", offset=n)

    [nobody] = await intake.admit(pool, next_event(1))
    assert [o.outcome for o in nobody.outcomes] == ["no_trigger"]
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "fresh"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    [admitted] = await intake.admit(pool, next_event(2))
    assert len(admitted.instance_ids) == 1
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "fresh", enabled=False))
    [off] = await intake.admit(pool, next_event(3))
    assert [o.outcome for o in off.outcomes] == ["disabled"]
    # A write that bypasses the repository (a cascade, an operator's SQL) is seen as well.
    await pool.execute("UPDATE triggers SET enabled = true, spec = spec || '{\"enabled\": true}'")
    [again] = await intake.admit(pool, next_event(4))
    assert len(again.instance_ids) == 1
    await pool.execute("DELETE FROM workflows")
    await pool.execute("DELETE FROM triggers")
    [gone] = await intake.admit(pool, next_event(5))
    assert [o.outcome for o in gone.outcomes] == ["no_trigger"]


async def test_the_generation_moves_in_the_transaction_of_the_change(pool: Pool) -> None:
    async with pool.acquire() as conn:
        before = await trigger_repo.generation(conn)
        async with conn.transaction():
            await add_trigger(conn, kafka_trigger("kt", "orders"))
            inside = await trigger_repo.generation(conn)
            # Another session still sees the old generation until the commit.
            assert await pool.fetchval("SELECT token FROM trigger_generation") == before
        assert inside != before
        assert await trigger_repo.generation(conn) == inside
