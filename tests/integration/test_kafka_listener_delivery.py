"""Exactly one instance per message under redelivery, rebalancing and trigger changes.

Redelivery is real: a consumer group rewound to offset 0, two groups racing on the same records,
partitions moving between two listener members of one group.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from shared.db import triggers as trigger_repo
from tests.factories import add_trigger, kafka_trigger
from tests.integration.kafka_support import (
    RecordingListener,
    Topic,
    TopicFactory,
    consumer,
    producer,
)
from tests.support.kafka_listener import (
    Pool,
    bind,
    eventually,
    instance_count,
    outcomes_by_ref,
    running_listener,
    send,
    wait_committed,
    wait_events,
)

N = 1000


async def send_many(broker: EmbeddedKafka, topic: Topic, count: int, start: int = 0) -> None:
    """Produce `count` JSON records spread over every partition of `topic`, all acknowledged."""
    async with producer(broker, linger_ms=5) as client:
        sent = [
            await client.send(
                topic.name,
                json.dumps({"n": n}).encode(),
                partition=n % topic.partitions,
            )
            for n in range(start, start + count)
        ]
        await asyncio.gather(*sent)


async def end_offsets(broker: EmbeddedKafka, topic: Topic) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await reader.start()
    try:
        ends: dict[TopicPartition, int] = await reader.end_offsets(sorted(topic.tps))
    finally:
        await reader.stop()
    return ends


async def wait_all_committed(broker: EmbeddedKafka, group: str, topic: Topic) -> None:
    for tp, end in (await end_offsets(broker, topic)).items():
        await wait_committed(broker, group, topic.name, end, tp.partition)


async def rewind(broker: EmbeddedKafka, group: str, topic: Topic) -> None:
    """Commit offset 0 for every partition as a member of `group`: it reads everything again."""
    listener = RecordingListener()
    async with consumer(broker, [topic.name], group=group, listener=listener) as member:
        await listener.wait_for(lambda seen: seen.assigned == topic.tps)
        await member.commit(dict.fromkeys(topic.tps, 0))


async def admitted_numbers(pool: Pool) -> list[int]:
    rows = await pool.fetch("SELECT trigger_message->>'value' AS value FROM instances")
    return sorted(json.loads(r["value"])["n"] for r in rows)


async def outcome_counts(pool: Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT outcome, count(*) AS n FROM event_outcomes GROUP BY outcome")
    return {r["outcome"]: int(r["n"]) for r in rows}


@pytest.mark.parametrize("redelivery", ["rewound group", "two groups racing"])
async def test_every_message_delivered_twice_makes_exactly_one_instance(
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
    redelivery: str,
) -> None:
    topic = await kafka_topics(partitions=2)
    await bind(pool, topic.name)
    await send_many(kafka_broker, topic, N)
    if redelivery == "rewound group":
        async with running_listener(db_url, kafka_broker) as first:
            await wait_events(pool, N)
            await wait_all_committed(kafka_broker, first.group, topic)
        assert await instance_count(pool) == N
        await rewind(kafka_broker, first.group, topic)
        async with running_listener(db_url, kafka_broker, group=first.group):
            await wait_events(pool, 2 * N)
            await wait_all_committed(kafka_broker, first.group, topic)
    else:
        async with (
            running_listener(db_url, kafka_broker) as one,
            running_listener(db_url, kafka_broker) as two,
        ):
            await wait_events(pool, 2 * N)
            await wait_all_committed(kafka_broker, one.group, topic)
            await wait_all_committed(kafka_broker, two.group, topic)
    assert await admitted_numbers(pool) == list(range(N))
    assert await outcome_counts(pool) == {"admitted": N, "duplicate": N}
    assert await pool.fetchval("SELECT count(*) FROM events") == 2 * N


async def test_partitions_move_between_members_without_loss_or_duplicate_instances(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics(partitions=4)
    await bind(pool, topic.name)
    async with running_listener(db_url, kafka_broker) as first:
        await send_many(kafka_broker, topic, 100, start=0)
        await eventually(lambda: _at_least(pool, 100))
        async with running_listener(db_url, kafka_broker, group=first.group):
            # The second member's join rebalances the group while records keep coming.
            await send_many(kafka_broker, topic, 100, start=100)
            await eventually(lambda: _at_least(pool, 200))
        # The second member left: its partitions come back to the first one.
        await send_many(kafka_broker, topic, 100, start=200)
        await eventually(lambda: _at_least(pool, 300))
        await wait_all_committed(kafka_broker, first.group, topic)
    assert await admitted_numbers(pool) == list(range(300))
    counts = await outcome_counts(pool)
    assert counts["admitted"] == 300
    assert set(counts) <= {"admitted", "duplicate"}


def next_millisecond() -> None:
    """Return once the wall clock has entered the next millisecond (waits under 1 ms)."""
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == start:
        pass


async def _at_least(pool: Pool, count: int) -> bool | None:
    return True if await instance_count(pool) >= count else None


def subscribed_topics() -> float | None:
    return REGISTRY.get_sample_value(
        "sluice_kafka_listener_subscribed_topics", {"cluster": "default"}
    )


async def wait_subscribed(count: int) -> None:
    async def reached() -> bool | None:
        return True if subscribed_topics() == count else None

    await eventually(reached)


async def set_trigger(pool: Pool, name: str, topic: str, **fields: Any) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger(name, topic, **fields))


async def test_trigger_changes_resubscribe_the_running_listener(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    one, two = await kafka_topics(), await kafka_topics()
    async with running_listener(db_url, kafka_broker) as listener:
        await wait_subscribed(0)
        [before] = await send(kafka_broker, one.name, [b'{"go": true}'])
        # Kafka timestamps have millisecond resolution: "before" must be in an earlier one.
        next_millisecond()

        # Created while the listener runs: it fires for the next message, not for older ones.
        await bind(pool, one.name, trigger="first")
        [first] = await send(kafka_broker, one.name, [b'{"go": true}'])
        await wait_committed(kafka_broker, listener.group, one.name, first + 1)
        await wait_subscribed(1)
        found = await outcomes_by_ref(pool)
        assert f"{one.name}/0/{before}" not in found
        assert found[f"{one.name}/0/{first}"] == [("admitted", None)]

        # A second topic joins the subscription (its trigger has no workflow yet).
        await set_trigger(pool, "second", two.name)
        [second] = await send(kafka_broker, two.name, [b"{}"])
        await wait_committed(kafka_broker, listener.group, two.name, second + 1)
        await wait_subscribed(2)

        # A changed filter applies to the next message.
        await set_trigger(pool, "first", one.name, filter="value.go")
        [stopped, going] = await send(kafka_broker, one.name, [b'{"go": false}', b'{"go": 1}'])
        await wait_committed(kafka_broker, listener.group, one.name, going + 1)

        # Disabled: the topic leaves the subscription, its messages wait in Kafka...
        await set_trigger(pool, "first", one.name, filter="value.go", enabled=False)
        await wait_subscribed(1)
        [paused] = await send(kafka_broker, one.name, [b'{"go": true}'])
        # ...and are read when it is enabled again (a disabled trigger would record `disabled`).
        await set_trigger(pool, "first", one.name, filter="value.go")
        await wait_committed(kafka_broker, listener.group, one.name, paused + 1)

        # Deleted: the topic leaves the subscription.
        async with pool.acquire() as conn:
            await trigger_repo.delete(conn, 1, "second")
        await wait_subscribed(1)
    found = await outcomes_by_ref(pool)
    assert [found[f"{one.name}/0/{o}"][0][0] for o in (stopped, going, paused)] == [
        "filtered",
        "admitted",
        "admitted",
    ]
    assert found[f"{two.name}/0/{second}"] == [
        ("no_workflow", "no workflow is bound to this trigger")
    ]
    assert await instance_count(pool) == 3


async def test_a_topic_created_after_its_trigger_is_picked_up(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka
) -> None:
    name = f"late-{uuid.uuid4().hex[:12]}"
    await bind(pool, name)
    async with running_listener(db_url, kafka_broker) as listener:
        await wait_subscribed(1)
        await create_topics(kafka_broker.bootstrap, [name])
        [offset] = await send(kafka_broker, name, [b"{}"])
        await wait_committed(kafka_broker, listener.group, name, offset + 1)
    assert await instance_count(pool) == 1
