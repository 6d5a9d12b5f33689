"""Coalescing uploads end to end: a real S3 endpoint notifying through SQS, the storage listener,
the scheduler's window closer and the executor, all on real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from services.scheduler.windows import serve_windows
from shared.db import coalesce_windows
from shared.db.pool import create_pool
from shared.embedded.s3 import EmbeddedS3
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import (  # noqa: F401 - fixtures
    NotifiedBucket,
    Pool,
    embedded_s3_fixture,
    eventually,
    finished_instances,
    listener_settings,
    node_output,
    notified_bucket_fixture,
    running_executor,
    running_listener,
    s3_client_fixture,
    sqs_client_fixture,
)

BURSTS = (130, 250, 20, 400, 200)
MAX_EVENTS = 100


@asynccontextmanager
async def running_closer(db_url: str) -> AsyncIterator[None]:
    """The scheduler's window closer, in this process."""
    stop = asyncio.Event()
    pool = await create_pool(db_url, min_size=1, max_size=2)
    task = asyncio.create_task(serve_windows(pool, stop, poll_s=0.2))
    try:
        yield
    finally:
        stop.set()
        await task
        await pool.close()


async def members(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM coalesce_members"))


async def until_members(pool: Pool, count: int, *, timeout_s: float) -> None:
    async def reached() -> bool | None:
        return True if await members(pool) == count else None

    await eventually(reached, timeout_s=timeout_s)


async def open_windows(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM coalesce_windows WHERE closed_at IS NULL"))


async def upload(s3: Any, bucket: str, keys: list[str]) -> None:
    """Many clients at once, as a burst of files arrives."""
    gate = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with gate:
            await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    await asyncio.gather(*(put(k) for k in keys))


@pytest.mark.timeout(420)
async def test_1000_uploads_in_bursts_make_one_instance_per_window(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    async with pool.acquire() as conn:
        await add_trigger(
            conn,
            s3_trigger(
                "files",
                bucket,
                key_pattern="in/**",
                coalesce={"window_s": 3600, "max_events": MAX_EVENTS},
            ),
        )
        await add_workflow(conn, workflow("load_batch", trigger="files"))
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)
    sent: list[str] = []
    async with running_listener(settings), running_closer(db_url):
        for burst, size in enumerate(BURSTS):
            keys = [f"in/b{burst}/{n:04}.csv" for n in range(size)]
            sent.extend(keys)
            await upload(s3_client, bucket, keys)
            await until_members(pool, len(sent), timeout_s=120)
            # The burst is over: its last window's time is up, and the closer closes it.
            await pool.execute(
                "UPDATE coalesce_windows SET closes_at = now() WHERE closed_at IS NULL"
            )
            await eventually(lambda: _at(open_windows(pool), 0), timeout_s=30)

    windows = sum(math.ceil(size / MAX_EVENTS) for size in BURSTS)
    instances = [r["id"] for r in await pool.fetch("SELECT id FROM instances ORDER BY id")]
    assert len(instances) == windows == 12
    assert await pool.fetchval("SELECT count(*) FROM coalesce_windows") == windows
    per_instance = {i: await _keys(pool, i) for i in instances}
    found = Counter(k for keys in per_instance.values() for k in keys)
    assert set(found) == set(sent) and len(sent) == 1000
    assert max(found.values()) == 1, "a key landed in two instances"
    # Within an instance the messages are in admission order, that is, in event id order.
    for instance_id in instances:
        ids = await pool.fetchval(
            "SELECT array_agg(m.event_id ORDER BY m.seq) FROM coalesce_members m "
            "JOIN coalesce_windows w ON w.id = m.window_id WHERE w.instance_id = $1",
            instance_id,
        )
        assert ids == sorted(ids)
    # Each event's audit: coalesced, naming the instance that holds its message.
    rows = await pool.fetch(
        "SELECT e.payload->'data'->'s3'->'object'->>'key' AS key, o.outcome, o.instance_ids "
        "FROM events e JOIN event_outcomes o ON o.event_id = e.id"
    )
    holder = {k: i for i, keys in per_instance.items() for k in keys}
    coalesced = [r for r in rows if r["outcome"] == "coalesced"]
    assert len(coalesced) == 1000
    assert all(r["instance_ids"] == [holder[r["key"]]] for r in coalesced)
    assert {r["outcome"] for r in rows} <= {"coalesced", "duplicate"}


async def _at(value: Any, wanted: int) -> bool | None:
    return True if await value == wanted else None


async def _keys(pool: Pool, instance_id: int) -> list[str]:
    messages = await coalesce_windows.instance_messages(pool, instance_id)
    assert messages is not None
    return [m["data"]["s3"]["object"]["key"] for m in messages]


HOSTILE_KEYS = ["in/$(touch pwned).csv", "in/'; echo injected '.csv", "in/a b`id`.csv"]


@pytest.mark.timeout(180)
async def test_nodes_see_every_message_of_the_window_as_data(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    nodes = [
        {
            "name": "list",
            "type": "shell",
            "upstream": [],
            "code": 'echo "first=${workflow.triggerMessage.data.s3.object.key}"\n'
            "printf '%s' \"${workflow.triggerMessages}\" > messages.json\n"
            'python3 -c \'import json; [print(m["data"]["s3"]["object"]["key"]) '
            'for m in json.load(open("messages.json"))]\'\n',
        },
        {
            "name": "count",
            "type": "python",
            "upstream": ["list"],
            "code": "import json\n"
            "messages = json.loads(${workflow.triggerMessages})\n"
            "print('count', len(messages), messages[-1]['data']['s3']['object']['key'])\n",
        },
    ]
    async with pool.acquire() as conn:
        await add_trigger(
            conn, s3_trigger("files", bucket, coalesce={"window_s": 3600, "max_events": 3})
        )
        await add_workflow(conn, workflow("report", trigger="files", nodes=nodes))
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)
    async with running_listener(settings), running_executor(settings):
        for key in HOSTILE_KEYS:
            # One at a time: the order of the messages is the order of the uploads.
            await s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
            await until_members(pool, HOSTILE_KEYS.index(key) + 1, timeout_s=30)
        [instance] = await finished_instances(pool, 1)
    assert instance["state"] == "succeeded"
    listed = await node_output(pool, instance["id"], "list")
    assert listed.splitlines() == [f"first={HOSTILE_KEYS[0]}", *HOSTILE_KEYS]
    counted = await node_output(pool, instance["id"], "count")
    assert counted.strip() == f"count 3 {HOSTILE_KEYS[-1]}"
