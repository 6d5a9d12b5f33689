"""`sluice dev` bucket wiring: trigger buckets exist in the embedded S3 and notify the dev queue."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from services.dev import buckets as dev_buckets
from services.dev.servers.s3 import EmbeddedS3, ensure_queue
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import (
    Pool,
    eventually,
    listener_settings,
    running_listener,
    unique,
    wait_for_events,
)


async def queue_arn_of(s3: Any, bucket: str) -> list[str]:
    config = await s3.get_bucket_notification_configuration(Bucket=bucket)
    return [c["QueueArn"] for c in config.get("QueueConfigurations", [])]


async def bucket_names(s3: Any) -> set[str]:
    return {b["Name"] for b in (await s3.list_buckets()).get("Buckets", [])}


async def test_reconcile_wires_every_trigger_bucket_once(
    pool: Pool, s3_client: Any, sqs_client: Any
) -> None:
    queue = await ensure_queue(sqs_client, unique("dev"))
    enabled, disabled = unique("in"), unique("off")
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("a", enabled))
        await add_trigger(conn, s3_trigger("b", disabled, enabled=False))
        await add_trigger(conn, s3_trigger("c", enabled, key_pattern="x/*"))
    wired: set[str] = set()

    first = await dev_buckets.reconcile(pool, s3_client, queue.arn, wired)
    again = await dev_buckets.reconcile(pool, s3_client, queue.arn, wired)

    assert sorted(first) == sorted([enabled, disabled])
    assert again == []
    assert {enabled, disabled} <= await bucket_names(s3_client)
    for bucket in (enabled, disabled):
        assert await queue_arn_of(s3_client, bucket) == [queue.arn]


async def test_a_new_trigger_bucket_notifies_the_dev_queue_within_two_seconds(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, s3_client: Any, sqs_client: Any
) -> None:
    queue = await dev_buckets.dev_queue(embedded_s3, unique("dev"))
    warmup = unique("warm")
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("warmup", warmup))
    stop = asyncio.Event()
    # A poll interval far beyond the deadline: only the NOTIFY can make it in time.
    task = asyncio.create_task(
        dev_buckets.run(db_url, embedded_s3, stop, queue_arn=queue.arn, poll_s=3600)
    )
    try:
        # Its first round wires the warm-up bucket; it LISTENs from before that round.
        await eventually(lambda: _wired(s3_client, warmup, queue.arn))
        bucket = unique("new")
        created = time.monotonic()
        async with pool.acquire() as conn:
            await add_trigger(conn, s3_trigger("files", bucket))

        await eventually(lambda: _wired(s3_client, bucket, queue.arn), timeout_s=2)
        assert time.monotonic() - created < 2
        await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"x")
        bodies = await eventually(lambda: _records(sqs_client, queue.url))
    finally:
        stop.set()
        await task

    [record] = [r for body in bodies for r in body.get("Records", [])]
    assert record["s3"]["bucket"]["name"] == bucket


async def _wired(s3: Any, bucket: str, queue_arn: str) -> bool | None:
    if bucket not in await bucket_names(s3):
        return None
    return True if await queue_arn_of(s3, bucket) == [queue_arn] else None


async def _records(sqs: Any, url: str) -> list[dict[str, Any]] | None:
    response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    bodies = [json.loads(m["Body"]) for m in response.get("Messages", [])]
    with_records = [b for b in bodies if "Records" in b]
    return with_records or None


async def test_dev_composition_a_trigger_then_an_upload_starts_a_run(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, s3_client: Any
) -> None:
    """What `sluice dev` wires: reconciler + listener reading the dev queue, no manual setup."""
    queue = await dev_buckets.dev_queue(embedded_s3, unique("dev"))
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)
    bucket = unique("data")
    stop = asyncio.Event()
    reconciler = asyncio.create_task(
        dev_buckets.run(db_url, embedded_s3, stop, queue_arn=queue.arn)
    )
    try:
        async with running_listener(settings):
            async with pool.acquire() as conn:
                await add_trigger(conn, s3_trigger("files", bucket, key_pattern="input/*.csv"))
                await add_workflow(conn, workflow("wf", trigger="files"))
            await eventually(lambda: _wired(s3_client, bucket, queue.arn))
            await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"x")
            [event] = await wait_for_events(pool, 1)
    finally:
        stop.set()
        await reconciler

    assert event["ref"].startswith(f"{bucket}/input/a.csv@")
    [message] = [r["trigger_message"] for r in await pool.fetch("SELECT * FROM instances")]
    assert message["data"]["s3"]["object"]["key"] == "input/a.csv"
