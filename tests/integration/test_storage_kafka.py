"""S3 event records on Kafka (MinIO's Kafka target): admit, commit after admission, skip poison."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.dev.servers.kafka import EmbeddedKafka
from services.dev.servers.process import free_port
from services.storage_listener.kafka_source import START_SKEW
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.integration import kafka_support
from tests.integration.kafka_support import TopicFactory, group_id, group_timing, producer
from tests.support.s3 import (
    Pool,
    eventually,
    listener_settings,
    outcomes,
    running_listener,
    storage_settings,
    wait_for_events,
)

# The broker fixtures, registered in this module under their own names.
kafka_broker = kafka_support.kafka_broker
kafka_topics = kafka_support.kafka_topics
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "s3"
MINIO_PUT = json.loads((FIXTURES / "minio_put.json").read_bytes())


def minio_body(key: str, etag: str = "e1") -> bytes:
    document = json.loads(json.dumps(MINIO_PUT))
    document["Key"] = f"data/{key}"
    document["Records"][0]["s3"]["object"]["key"] = key.replace("/", "%2F")
    document["Records"][0]["s3"]["object"]["eTag"] = etag
    return json.dumps(document).encode()


def kafka_storage(broker: EmbeddedKafka, topic: str, group: str) -> Any:
    timing = group_timing(broker.backend)
    return storage_settings(
        kafka_topics=topic,
        kafka_group_id=group,
        kafka_session_timeout_ms=timing["session_timeout_ms"],
        kafka_heartbeat_interval_ms=timing["heartbeat_interval_ms"],
    )


async def bind_workflow(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", "data", key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("process_file", trigger="files"))


async def committed(broker: EmbeddedKafka, group: str, topic: str, partition: int) -> int | None:
    """The group's committed offset of one partition, read without joining the group."""
    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await reader.start()
    try:
        offset = await reader.committed(TopicPartition(topic, partition))
    finally:
        await reader.stop()
    return None if offset is None else int(offset)


async def test_records_are_admitted_and_poison_is_recorded_without_stalling(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    await bind_workflow(pool)
    topic = await kafka_topics(partitions=1)
    group = group_id()
    settings = listener_settings(db_url, kafka_bootstrap=kafka_broker.bootstrap)
    storage = kafka_storage(kafka_broker, topic.name, group)
    values = [
        minio_body("input/a.csv", "e1"),
        b"\x00not json",
        None,
        minio_body("input/a.csv", "e1"),  # delivered again
        minio_body("input/b.csv", "e2"),
    ]

    async with running_listener(settings, storage) as listener:
        await _until_assigned(listener.url)
        async with producer(kafka_broker) as client:
            # One key: one partition, in order, whatever the broker made of the topic.
            sent = [await client.send_and_wait(topic.name, v, key=b"k") for v in values]
        events = await wait_for_events(pool, 5)

    partition = sent[0].partition
    assert [e["ref"] for e in events[1:3]] == [
        f"kafka:{topic.name}/{partition}/{sent[1].offset}",
        f"kafka:{topic.name}/{partition}/{sent[2].offset}",
    ]
    assert "not valid JSON" in events[1]["error"]
    assert events[2]["error"] == "message has no value"
    kinds = [(await outcomes(pool, e["id"]))[0][0] for e in events]
    assert kinds == ["admitted", "invalid", "invalid", "duplicate", "admitted"]
    keys = [
        r["trigger_message"]["data"]["s3"]["object"]["key"]
        for r in await pool.fetch("SELECT trigger_message FROM instances ORDER BY id")
    ]
    assert keys == ["input/a.csv", "input/b.csv"]
    assert await committed(kafka_broker, group, topic.name, partition) == sent[-1].offset + 1


async def test_a_new_group_starts_at_the_trigger_creation_time(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    if kafka_broker.backend == "mock":
        pytest.skip("librdkafka's mock cluster answers no ListOffsets-by-time query")
    topic = await kafka_topics(partitions=1)
    async with producer(kafka_broker) as client:
        await client.send_and_wait(topic.name, minio_body("input/before.csv", "e0"))
    await bind_workflow(pool)
    # The trigger counts as created a moment from now (its start is creation less START_SKEW):
    # the message above is older, the one below newer, whatever the broker's time index.
    start = await pool.fetchval(
        "UPDATE triggers SET created_at = now() + $1::interval RETURNING created_at - $2::interval",
        START_SKEW + timedelta(milliseconds=300),
        START_SKEW,
    )

    async def started() -> bool | None:
        return True if datetime.now(UTC) > start + timedelta(milliseconds=20) else None

    await eventually(started)
    async with producer(kafka_broker) as client:
        await client.send_and_wait(topic.name, minio_body("input/new.csv", "e1"))
    settings = listener_settings(db_url, kafka_bootstrap=kafka_broker.bootstrap)
    storage = kafka_storage(kafka_broker, topic.name, group_id())

    async with running_listener(settings, storage):
        [event] = await wait_for_events(pool, 1)

    assert event["ref"].startswith("data/input/new.csv@")


async def test_records_older_than_the_start_are_recorded_not_dropped(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    """A broker whose time index is by append time (Tansu) finds a record stamped an hour ago
    but appended now: it is read, and then admitted and audited like any other."""
    if kafka_broker.backend != "tansu":
        pytest.skip("needs a broker that searches offsets by append time")
    topic = await kafka_topics(partitions=1)
    await bind_workflow(pool)
    an_hour_ago_ms = int((time.time() - 3600) * 1000)
    async with producer(kafka_broker) as client:
        await client.send_and_wait(
            topic.name, minio_body("input/old.csv", "e0"), timestamp_ms=an_hour_ago_ms
        )
        await client.send_and_wait(topic.name, minio_body("input/new.csv", "e1"))
    settings = listener_settings(db_url, kafka_bootstrap=kafka_broker.bootstrap)
    storage = kafka_storage(kafka_broker, topic.name, group_id())

    async with running_listener(settings, storage):
        events = await wait_for_events(pool, 2)

    assert [e["ref"].split("@")[0] for e in events] == ["data/input/old.csv", "data/input/new.csv"]
    assert [(await outcomes(pool, e["id"]))[0][0] for e in events] == ["admitted", "admitted"]


async def test_without_s3_triggers_a_new_group_starts_at_the_end(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics(partitions=1)
    async with producer(kafka_broker) as client:
        await client.send_and_wait(topic.name, minio_body("input/before.csv", "e0"))
    settings = listener_settings(db_url, kafka_bootstrap=kafka_broker.bootstrap)
    group = group_id()
    storage = kafka_storage(kafka_broker, topic.name, group)

    async with running_listener(settings, storage) as listener:
        # Once positioned, later messages are read: the earlier one never is.
        await _until_assigned(listener.url)
        async with producer(kafka_broker) as client:
            await client.send_and_wait(topic.name, minio_body("input/after.csv", "e1"))
        [event] = await wait_for_events(pool, 1)

    assert event["ref"].startswith("data/input/after.csv@")
    [(outcome, _)] = await outcomes(pool, event["id"])
    assert outcome == "no_trigger"


async def _until_assigned(url: str) -> None:
    """Wait until the listener's consumer owns (and has positioned) its partitions."""
    async with httpx.AsyncClient() as client:

        async def assigned() -> bool | None:
            document = (await client.get(f"{url}/readyz")).json()
            return True if document["kafka"].get("partitions") else None

        await eventually(assigned)


async def test_unreachable_brokers_are_retried_until_stop(db_url: str) -> None:
    settings = listener_settings(db_url, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    storage = storage_settings(kafka_topics="minio-events")

    async with running_listener(settings, storage) as listener, httpx.AsyncClient() as client:

        async def kafka_error() -> str | None:
            document = (await client.get(f"{listener.url}/readyz")).json()
            error: str | None = document["kafka"]["last_error"]
            return error

        error = await eventually(kafka_error)

    assert error.startswith("cannot connect: KafkaConnectionError")
