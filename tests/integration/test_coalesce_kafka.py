"""Coalescing Kafka records through the real listener and broker: windows in offset order, and a
second consumer group re-reading the topic finds every record a duplicate of its window."""

from __future__ import annotations

import pytest

from shared.db import coalesce_windows
from shared.embedded.kafka import EmbeddedKafka
from tests.integration.kafka_support import TopicFactory
from tests.support.kafka_listener import bind, running_listener, send
from tests.support.s3 import Pool, eventually

RECORDS = 250


async def _count_is(pool: Pool, sql: str, wanted: int) -> bool | None:
    return True if await pool.fetchval(sql) == wanted else None


async def until(pool: Pool, sql: str, wanted: int) -> None:
    async def check() -> bool | None:
        return await _count_is(pool, sql, wanted)

    await eventually(check, timeout_s=90)


@pytest.mark.timeout(240)
async def test_records_coalesce_in_offset_order_and_redeliveries_are_duplicates(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics(partitions=1)
    await bind(pool, topic.name, coalesce={"window_s": 3600, "max_events": 100})
    values: list[bytes | None] = [b'{"n": %d}' % n for n in range(RECORDS)]
    async with running_listener(db_url, kafka_broker):
        offsets = await send(kafka_broker, topic.name, values)
        await until(pool, "SELECT count(*) FROM coalesce_members", RECORDS)
    await pool.execute("UPDATE coalesce_windows SET closes_at = now() WHERE closed_at IS NULL")
    await coalesce_windows.close_due(pool)
    instances = [r["id"] for r in await pool.fetch("SELECT id FROM instances ORDER BY id")]
    assert len(instances) == 3
    seen: list[int] = []
    for instance_id in instances:
        messages = await coalesce_windows.instance_messages(pool, instance_id)
        assert messages is not None
        seen.extend(m["offset"] for m in messages)
    assert seen == offsets == list(range(RECORDS))

    # Another consumer group reads the topic from the start: the same records, all duplicates.
    async with running_listener(db_url, kafka_broker):
        await until(
            pool, "SELECT count(*) FROM event_outcomes WHERE outcome = 'duplicate'", RECORDS
        )
    assert await pool.fetchval("SELECT count(*) FROM coalesce_members") == RECORDS
    assert await pool.fetchval("SELECT count(*) FROM instances") == 3
    rows = await pool.fetch(
        "SELECT o.instance_ids FROM event_outcomes o WHERE o.outcome = 'duplicate'"
    )
    assert {i for r in rows for i in r["instance_ids"]} == set(instances)
