"""Backpressure on the storage listener (policy.max_waiting): the webhook answers 503 with
`Retry-After` and SQS messages stay queued while the workflow is full; both are admitted after
it drained, exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.storage_listener.config import PollTarget
from services.storage_listener.health import SourceHealth
from services.storage_listener.poll import PollSource
from shared.backpressure import Backpressure
from shared.embedded.kafka import EmbeddedKafka
from shared.embedded.s3 import EmbeddedS3, ensure_bucket, ensure_queue
from tests.factories import add_trigger, add_workflow, s3_trigger, shell_node, workflow
from tests.integration import kafka_support
from tests.integration.kafka_support import TopicFactory, group_id, group_timing, producer
from tests.support.executor import running_executor, wait_for
from tests.support.kafka_listener import committed
from tests.support.s3 import (  # noqa: F401 - fixtures
    Pool,
    embedded_s3_fixture,
    eventually,
    listener_settings,
    queue_depth,
    running_listener,
    s3_client_fixture,
    sqs_client_fixture,
    storage_settings,
    unique,
    wait_for_events,
)

# The broker fixtures, registered in this module under their own names.
kafka_broker = kafka_support.kafka_broker
kafka_topics = kafka_support.kafka_topics
AUTH = {"Authorization": "Bearer t1", "Content-Type": "application/json"}


async def bind_bounded(pool: Pool, bucket: str, max_waiting: int) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket))
        await add_workflow(
            conn,
            workflow(
                "process_file",
                trigger="files",
                nodes=[shell_node("a")],
                policy={"max_waiting": max_waiting},
            ),
        )


def body(bucket: str, key: str) -> str:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime(2026, 12, 5, 8, 0, tzinfo=UTC).isoformat(),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 1, "eTag": f"etag-{key}", "sequencer": "01"},
        },
    }
    return json.dumps({"Records": [record]})


async def count(pool: Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_webhook_answers_503_with_retry_after_while_full_then_admits(
    pool: Pool, db_url: str
) -> None:
    await bind_bounded(pool, "data", max_waiting=3)
    settings = listener_settings(db_url, webhook_tokens="t1")
    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        hook = f"{listener.url}/hooks/s3"
        for key in ("a.csv", "b.csv", "c.csv"):
            response = await client.post(hook, content=body("data", key), headers=AUTH)
            assert response.status_code == 200
        held = await client.post(hook, content=body("data", "d.csv"), headers=AUTH)
        assert held.status_code == 503
        assert held.headers["retry-after"] == "5"
        message = held.json()["error"]["message"]
        assert "trigger 'files'" in message and "max_waiting 3" in message
        # Nothing of the held request was recorded: its retry is its first delivery.
        assert await count(pool, "events") == 3
        # Events for other buckets are not held.
        other = await client.post(hook, content=body("elsewhere", "x.csv"), headers=AUTH)
        assert other.status_code == 200
        ready = (await client.get(f"{listener.url}/readyz")).json()
        [paused] = ready["backpressure"]["paused"]
        assert paused["trigger"] == "files" and "resumes below 3" in paused["reason"]
        assert (
            metric(
                "sluice_backpressure_paused",
                source="storage-listener",
                workspace_id="1",
                trigger="files",
            )
            == 1
        )
        async with running_executor(db_url):
            await wait_for(pool, "SELECT count(*) = 3 FROM instances WHERE state = 'succeeded'")
        retried = await client.post(hook, content=body("data", "d.csv"), headers=AUTH)
        assert retried.status_code == 200
        assert len(retried.json()["instance_ids"]) == 1
        # Dedup still holds: a redelivery of an admitted event is a duplicate, not a run.
        again = await client.post(hook, content=body("data", "a.csv"), headers=AUTH)
        assert again.status_code == 200 and again.json()["instance_ids"] == []
        outcome = await pool.fetchval(
            "SELECT outcome FROM event_outcomes WHERE event_id = $1",
            again.json()["event_ids"][0],
        )
        assert outcome == "duplicate"
        ready = (await client.get(f"{listener.url}/readyz")).json()
        assert ready["backpressure"]["paused"] == []
    keys = [
        r["key"]
        for r in await pool.fetch(
            "SELECT trigger_message->'data'->'s3'->'object'->>'key' AS key FROM instances "
            "ORDER BY id"
        )
    ]
    assert keys == ["a.csv", "b.csv", "c.csv", "d.csv"]


@pytest.mark.timeout(180)
async def test_sqs_messages_stay_queued_while_full_then_are_admitted(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, sqs_client: Any
) -> None:
    bucket = unique("data")
    queue = await ensure_queue(sqs_client, unique("events"))
    await bind_bounded(pool, bucket, max_waiting=2)
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)
    storage = storage_settings(sqs_visibility_timeout_s=1)
    held_before = metric("sluice_storage_notifications_total", source="sqs", result="held")
    async with running_listener(settings, storage):
        for key in ("a.csv", "b.csv"):
            await sqs_client.send_message(QueueUrl=queue.url, MessageBody=body(bucket, key))
        await wait_for_events(pool, 2)
        for key in ("c.csv", "d.csv"):
            await sqs_client.send_message(QueueUrl=queue.url, MessageBody=body(bucket, key))

        async def held_twice() -> bool | None:
            held = metric("sluice_storage_notifications_total", source="sqs", result="held")
            # Each held message came back after its visibility timeout and was held again.
            return True if held - held_before >= 4 else None

        await eventually(held_twice)
        assert await count(pool, "events") == 2
        assert await queue_depth(sqs_client, queue.url) == 2
        async with running_executor(db_url):
            await wait_for(
                pool,
                "SELECT count(*) = 4 FROM instances WHERE state = 'succeeded'",
                timeout_s=60,
            )

        async def drained() -> bool | None:
            return True if await queue_depth(sqs_client, queue.url) == 0 else None

        await eventually(drained)
    keys = sorted(
        r["key"]
        for r in await pool.fetch(
            "SELECT trigger_message->'data'->'s3'->'object'->>'key' AS key FROM instances"
        )
    )
    assert keys == ["a.csv", "b.csv", "c.csv", "d.csv"]
    assert await count(pool, "events") == 4


async def test_poll_stops_listing_a_held_target_and_finds_its_objects_later(
    pool: Pool, db_url: str, s3_client: Any
) -> None:
    bucket = unique("poll")
    await ensure_bucket(s3_client, bucket)
    await bind_bounded(pool, bucket, max_waiting=3)
    for i in range(5):
        await s3_client.put_object(Bucket=bucket, Key=f"in/{i}.csv", Body=b"x")
    gate = Backpressure("poll-test")
    source = PollSource(
        s3_client,
        pool,
        [PollTarget(bucket)],
        SourceHealth("poll", "test"),
        interval_s=60,
        page_size=2,
        backpressure=gate,
    )
    # Two pages fit (the second overshoots by one page); the third is held, claims rolled back.
    assert await source.poll_once() == 4
    assert [h.trigger for h in gate.holds()] == ["files"]
    # Still full: the target is not listed at all.
    assert await source.poll_once() == 0
    async with running_executor(db_url):
        await wait_for(pool, "SELECT count(*) = 4 FROM instances WHERE state = 'succeeded'")
    assert await source.poll_once() == 1
    keys = sorted(
        r["key"]
        for r in await pool.fetch(
            "SELECT trigger_message->'data'->'s3'->'object'->>'key' AS key FROM instances"
        )
    )
    assert keys == [f"in/{i}.csv" for i in range(5)]


@pytest.mark.timeout(180)
async def test_storage_kafka_source_pauses_its_topics_while_an_s3_trigger_is_held(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    await bind_bounded(pool, "data", max_waiting=2)
    topic = await kafka_topics(partitions=1)
    group = group_id()
    timing = group_timing(kafka_broker.backend)
    settings = listener_settings(db_url, kafka_bootstrap=kafka_broker.bootstrap, kafka_max_batch=1)
    storage = storage_settings(
        kafka_topics=topic.name,
        kafka_group_id=group,
        kafka_session_timeout_ms=timing["session_timeout_ms"],
        kafka_heartbeat_interval_ms=timing["heartbeat_interval_ms"],
    )
    async with running_listener(settings, storage) as listener, httpx.AsyncClient() as client:

        async def assigned() -> bool | None:
            document = (await client.get(f"{listener.url}/readyz")).json()
            return True if document["kafka"].get("partitions") else None

        await eventually(assigned)
        async with producer(kafka_broker) as kafka:
            sent = [
                await kafka.send_and_wait(topic.name, body("data", f"{i}.csv").encode(), key=b"k")
                for i in range(6)
            ]
        partition = sent[0].partition

        async def held() -> bool | None:
            document = (await client.get(f"{listener.url}/readyz")).json()
            return True if document["backpressure"].get("paused") else None

        await eventually(held)
        # At the bound plus at most the batch in flight; the rest stays uncommitted in Kafka.
        assert await count(pool, "events") <= 3
        done = await committed(kafka_broker, group, topic.name, partition)
        assert done is not None and done <= sent[2].offset + 1
        async with running_executor(db_url):
            await wait_for(
                pool,
                "SELECT count(*) = 6 FROM instances WHERE state = 'succeeded'",
                timeout_s=60,
            )

        async def all_committed() -> bool | None:
            at = await committed(kafka_broker, group, topic.name, partition)
            return True if at == sent[-1].offset + 1 else None

        await eventually(all_committed)
    assert await count(pool, "events") == 6
    keys = sorted(
        r["key"]
        for r in await pool.fetch(
            "SELECT trigger_message->'data'->'s3'->'object'->>'key' AS key FROM instances"
        )
    )
    assert keys == [f"{i}.csv" for i in range(6)]
