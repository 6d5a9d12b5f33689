"""Bucket polling against moto: unseen (key, etag) pairs admitted once, state kept in PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.dev.servers.s3 import EmbeddedS3, ensure_bucket
from services.storage_listener.config import PollTarget
from services.storage_listener.health import SourceHealth
from services.storage_listener.poll import PollSource
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import (
    Pool,
    listener_settings,
    running_listener,
    storage_settings,
    unique,
    wait_for_events,
)


@pytest.fixture
async def bucket(s3_client: Any) -> str:
    name = unique("poll")
    await ensure_bucket(s3_client, name)
    return name


async def bind_workflow(pool: Pool, bucket: str, **trigger: Any) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, **trigger))
        await add_workflow(conn, workflow("process_file", trigger="files"))


def poller(s3: Any, pool: Pool, *targets: PollTarget, **options: Any) -> PollSource:
    return PollSource(
        s3, pool, list(targets), SourceHealth("poll", "test"), interval_s=60, **options
    )


async def instance_keys(pool: Pool) -> list[str]:
    rows = await pool.fetch("SELECT trigger_message FROM instances ORDER BY id")
    return [r["trigger_message"]["data"]["s3"]["object"]["key"] for r in rows]


async def test_new_and_changed_objects_are_admitted_once(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    await bind_workflow(pool, bucket, key_pattern="input/*.csv")
    source = poller(s3_client, pool, PollTarget(bucket))
    put = await s3_client.put_object(Bucket=bucket, Key="input/a b+c.csv", Body=b"one")
    await s3_client.put_object(Bucket=bucket, Key="other/x.txt", Body=b"two")

    assert await source.poll_once() == 2
    assert await source.poll_once() == 0  # unchanged
    await s3_client.put_object(Bucket=bucket, Key="input/a b+c.csv", Body=b"changed")
    assert await source.poll_once() == 1

    assert await instance_keys(pool) == ["input/a b+c.csv", "input/a b+c.csv"]
    [first, _] = await pool.fetch("SELECT trigger_message FROM instances ORDER BY id")
    message = first["trigger_message"]
    assert message["type"] == "s3:ObjectCreated:Put"
    assert message["subject"] == f"{bucket}/input/a b+c.csv"
    assert message["data"]["eventSource"] == "sluice:poll"
    assert message["data"]["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert message["data"]["s3"]["object"]["size"] == 3
    # other/x.txt was admitted as an event but filtered by the key pattern.
    outcomes = await pool.fetch(
        "SELECT e.ref, o.outcome FROM events e JOIN event_outcomes o ON o.event_id = e.id "
        "ORDER BY e.id"
    )
    assert [r["outcome"] for r in outcomes] == ["admitted", "filtered", "admitted"]


async def test_only_the_prefix_is_listed_across_pages(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    await bind_workflow(pool, bucket)
    for i in range(5):
        await s3_client.put_object(Bucket=bucket, Key=f"in/{i}.csv", Body=b"x")
    await s3_client.put_object(Bucket=bucket, Key="out/0.csv", Body=b"x")

    source = poller(s3_client, pool, PollTarget(bucket, "in/"), page_size=2)

    assert await source.poll_once() == 5
    assert sorted(await instance_keys(pool)) == [f"in/{i}.csv" for i in range(5)]


async def test_existing_content_older_than_the_trigger_is_not_admitted(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    await s3_client.put_object(Bucket=bucket, Key="old.csv", Body=b"x")
    await bind_workflow(pool, bucket)
    # As if the trigger were created an hour after the upload.
    await pool.execute("UPDATE triggers SET created_at = now() + interval '1 hour'")
    source = poller(s3_client, pool, PollTarget(bucket))

    assert await source.poll_once() == 0
    await pool.execute("UPDATE triggers SET created_at = now() - interval '1 hour'")
    assert await source.poll_once() == 0  # already seen
    await s3_client.put_object(Bucket=bucket, Key="old.csv", Body=b"rewritten")
    assert await source.poll_once() == 1


async def test_buckets_without_an_enabled_trigger_are_not_listed(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    await s3_client.put_object(Bucket=bucket, Key="a.csv", Body=b"x")
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, enabled=False))
    source = poller(s3_client, pool, PollTarget(bucket))

    assert await source.poll_once() == 0
    assert await pool.fetchval("SELECT count(*) FROM storage_poll_objects") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_two_replicas_admit_each_object_once_even_without_dedup(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    await bind_workflow(pool, bucket, dedup="none")
    for i in range(20):
        await s3_client.put_object(Bucket=bucket, Key=f"f{i}.csv", Body=b"x")
    a = poller(s3_client, pool, PollTarget(bucket))
    b = poller(s3_client, pool, PollTarget(bucket))

    counts = await asyncio.gather(a.poll_once(), b.poll_once(), a.poll_once())

    assert sum(counts) == 20
    assert await pool.fetchval("SELECT count(*) FROM instances") == 20


async def test_a_listing_error_is_reported_and_other_targets_still_polled(
    pool: Pool, s3_client: Any, bucket: str
) -> None:
    missing = unique("gone")
    await bind_workflow(pool, bucket)
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("gone", missing))
    await s3_client.put_object(Bucket=bucket, Key="a.csv", Body=b"x")
    health = SourceHealth("poll", "test")
    source = PollSource(
        s3_client, pool, [PollTarget(missing), PollTarget(bucket)], health, interval_s=60
    )

    assert await source.poll_once() == 1
    assert health.last_error is not None
    assert missing in health.last_error and "NoSuchBucket" in health.last_error


async def test_the_service_polls_configured_targets(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, s3_client: Any, bucket: str
) -> None:
    await bind_workflow(pool, bucket)
    await s3_client.put_object(Bucket=bucket, Key="data.csv", Body=b"x")
    settings = listener_settings(db_url, embedded_s3)
    storage = storage_settings(poll=f"{bucket}/", poll_interval_s=3600)

    async with running_listener(settings, storage):
        [event] = await wait_for_events(pool, 1)

    assert event["ref"].startswith(f"{bucket}/data.csv@")
    assert await instance_keys(pool) == ["data.csv"]
