"""S3 → SQS intake against a real moto server: upload, match, dedup, delete after admission."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.storage_listener.admitter import Admitter
from services.storage_listener.health import SourceHealth
from services.storage_listener.sqs import SqsSource
from shared.embedded.s3 import EmbeddedS3, ensure_queue
from shared.models.events import AdmitResult, IncomingEvent
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import (  # noqa: F401 - fixtures
    NotifiedBucket,
    Pool,
    embedded_s3_fixture,
    eventually,
    listener_settings,
    notified_bucket_fixture,
    outcomes,
    queue_depth,
    running_listener,
    s3_client_fixture,
    sqs_client_fixture,
    unique,
    wait_for_events,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "s3"


async def bind_workflow(pool: Pool, bucket: str, **trigger: Any) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, **trigger))
        await add_workflow(conn, workflow("process_file", trigger="files"))


async def instances(pool: Pool) -> list[Any]:
    return list(await pool.fetch("SELECT * FROM instances ORDER BY id"))


async def test_upload_of_a_matching_key_starts_one_instance_with_the_cloudevents_message(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
    sqs_client: Any,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    await bind_workflow(pool, bucket, key_pattern="input/*.csv")
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        put = await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"id\n1\n")
        [event] = await wait_for_events(pool, 1)
        # Deleted only after admission; moto's s3:TestEvent was skipped and deleted too.
        await eventually(lambda: _empty(sqs_client, queue.url))

    [instance] = await instances(pool)
    message = instance["trigger_message"]
    assert instance["kind"] == "triggered"
    assert instance["event_id"] == event["id"]
    assert message["specversion"] == "1.0"
    assert message["type"] == "s3:ObjectCreated:Put"
    assert message["source"] == f"s3://{bucket}"
    assert message["subject"] == f"{bucket}/input/a.csv"
    assert message["data"]["s3"]["bucket"]["name"] == bucket
    assert message["data"]["s3"]["object"]["key"] == "input/a.csv"
    assert message["data"]["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert message["data"]["s3"]["object"]["size"] == 5
    assert event["source"] == "s3"
    assert event["subject"] == bucket
    assert event["ref"] == f"{bucket}/input/a.csv@{put['ETag'].strip(chr(34))}"
    assert await outcomes(pool, event["id"]) == [("admitted", None)]
    # The test event is not an event: nothing else was recorded.
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def _empty(sqs: Any, url: str) -> bool | None:
    return True if await queue_depth(sqs, url) == 0 else None


@pytest.mark.parametrize("key", ["other/b.txt", "input/x/a.csv", "input/a.csv.bak"])
async def test_keys_outside_the_pattern_start_nothing_and_the_audit_says_why(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
    key: str,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    await bind_workflow(pool, bucket, key_pattern="input/*.csv")
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        await s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
        [event] = await wait_for_events(pool, 1)

    assert await instances(pool) == []
    assert await outcomes(pool, event["id"]) == [
        ("filtered", f"key {key!r} does not match 'input/*.csv'")
    ]


async def test_the_same_notification_delivered_five_times_starts_one_instance(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    sqs_client: Any,
) -> None:
    bucket = unique("data")
    queue = await ensure_queue(sqs_client, unique("events"))
    await bind_workflow(pool, bucket, key_pattern="input/*.csv")
    body = _record_body(bucket, "input%2Fa.csv", etag="0f343b0931126a20f133d67c2b018a3b")
    for _ in range(5):
        await sqs_client.send_message(QueueUrl=queue.url, MessageBody=body)
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        events = await wait_for_events(pool, 5)
        await eventually(lambda: _empty(sqs_client, queue.url))

    [instance] = await instances(pool)
    assert instance["trigger_message"]["data"]["s3"]["object"]["key"] == "input/a.csv"
    kinds = [(await outcomes(pool, e["id"]))[0][0] for e in events]
    assert sorted(kinds) == ["admitted"] + ["duplicate"] * 4


@pytest.mark.parametrize(("dedup", "expected"), [("etag", 2), ("key", 1), ("none", 3)])
async def test_reupload_with_new_content_depends_on_the_dedup_mode(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
    dedup: str,
    expected: int,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    await bind_workflow(pool, bucket, key_pattern="input/*.csv", dedup=dedup)
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"first")
        await wait_for_events(pool, 1)
        await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"second")
        await wait_for_events(pool, 2)
        # The same content again: a new upload, but the same ETag.
        await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"second")
        await wait_for_events(pool, 3)

    assert len(await instances(pool)) == expected


async def test_sns_wrapped_notifications_are_unwrapped(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, sqs_client: Any
) -> None:
    bucket = unique("data")
    queue = await ensure_queue(sqs_client, unique("events"))
    await bind_workflow(pool, bucket)
    inner = _record_body(bucket, "reports/2024+05.csv", etag="abc")
    envelope = {
        "Type": "Notification",
        "MessageId": "7a1f0c52",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:uploads",
        "Subject": "Amazon S3 Notification",
        "Message": inner,
        "Timestamp": "2024-05-14T08:31:07.500Z",
    }
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody=json.dumps(envelope))
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        await wait_for_events(pool, 1)
        await eventually(lambda: _empty(sqs_client, queue.url))

    [instance] = await instances(pool)
    # AWS form-encodes keys: `+` is a space.
    assert instance["trigger_message"]["data"]["s3"]["object"]["key"] == "reports/2024 05.csv"


@pytest.mark.parametrize(
    ("body", "subject", "error"),
    [
        ("not json", "unknown", "not valid JSON"),
        ('{"Records": [{"s3": {"bucket": {"name": "BUCKET"}}}]}', "BUCKET", "no s3.object.key"),
        ('{"Type": "SubscriptionConfirmation", "Message": "x"}', "unknown", "carries no S3 event"),
    ],
)
async def test_malformed_messages_are_recorded_invalid_and_deleted(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    sqs_client: Any,
    body: str,
    subject: str,
    error: str,
) -> None:
    bucket = unique("data")
    queue = await ensure_queue(sqs_client, unique("events"))
    await bind_workflow(pool, bucket)
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody=body.replace("BUCKET", bucket))
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings):
        [event] = await wait_for_events(pool, 1)
        await eventually(lambda: _empty(sqs_client, queue.url))

    assert event["subject"] == subject.replace("BUCKET", bucket)
    assert error in event["error"]
    assert event["ref"].startswith(f"sqs:{queue.name}/")
    assert event["payload"] == body.replace("BUCKET", bucket)
    [(outcome, detail)] = await outcomes(pool, event["id"])
    assert outcome == "invalid"
    assert detail is not None and error in detail
    assert await instances(pool) == []


class _FailingAdmitter(Admitter):
    def __init__(self) -> None:
        super().__init__(pool=None)  # type: ignore[arg-type]
        self.calls = 0

    async def submit(
        self, events: list[IncomingEvent], *, hold: bool = False
    ) -> list[list[AdmitResult]]:
        self.calls += 1
        raise ConnectionError("database unreachable")


async def test_messages_are_not_deleted_when_admission_fails(sqs_client: Any) -> None:
    queue = await ensure_queue(sqs_client, unique("events"))
    body = _record_body("data", "input/a.csv", etag="e1")
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody=body)
    admitter = _FailingAdmitter()
    health = SourceHealth("sqs", "test")
    source = SqsSource(sqs_client, queue.url, admitter, health, wait_s=1)
    stop = asyncio.Event()

    async def stop_after_first_failure() -> None:
        await eventually(lambda: _true_if(health.last_error is not None))
        stop.set()

    async with asyncio.timeout(20):
        await asyncio.gather(source.run(stop), stop_after_first_failure())

    assert admitter.calls >= 1
    assert health.last_error == "ConnectionError: database unreachable"
    # Still in the queue (in flight until its visibility timeout ends): SQS will redeliver it.
    assert await queue_depth(sqs_client, queue.url) == 1


async def _true_if(condition: bool) -> bool | None:
    return True if condition else None


def _record_body(bucket: str, raw_key: str, *, etag: str) -> str:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime(2024, 5, 14, 8, 31, 7, tzinfo=UTC).isoformat(),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": raw_key, "size": 5, "eTag": etag, "sequencer": "0055AED6DCD90281E5"},
        },
    }
    return json.dumps({"Records": [record]})
