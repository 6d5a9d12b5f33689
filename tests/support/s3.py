"""S3/SQS fixtures (a moto server per session) and helpers to run the storage listener in tests.

tests/conftest.py registers this module as a plugin: a test asks for `embedded_s3`, `s3_client`,
`sqs_client` or `notified_bucket` by name, without importing them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import asyncpg
import httpx
import pytest

from services.dev.servers.process import free_port
from services.dev.servers.s3 import (
    EmbeddedS3,
    Queue,
    ensure_bucket,
    ensure_queue,
    notify_queue,
)
from services.storage_listener.config import StorageSettings
from services.storage_listener.service import run
from shared.settings import Settings, load_settings

T = TypeVar("T")
Pool: TypeAlias = "asyncpg.Pool[Any]"
WAIT_S = 20.0
"""Upper bound for waiting on the listener; a healthy one reacts in milliseconds."""


@pytest.fixture(scope="session", name="embedded_s3")
async def embedded_s3_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[EmbeddedS3]:
    """The session's moto server; its log is `<pytest tmp>/s3*/moto.log`."""
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    async with EmbeddedS3(log_path=log_path) as server:
        yield server


@pytest.fixture(name="s3_client")
async def s3_client_fixture(embedded_s3: EmbeddedS3) -> AsyncIterator[Any]:
    async with embedded_s3.client("s3") as client:
        yield client


@pytest.fixture(name="sqs_client")
async def sqs_client_fixture(embedded_s3: EmbeddedS3) -> AsyncIterator[Any]:
    async with embedded_s3.client("sqs") as client:
        yield client


def unique(prefix: str) -> str:
    """A bucket/queue/topic name no other test uses (valid as a bucket name)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class NotifiedBucket:
    """A new bucket whose ObjectCreated notifications go to a new queue."""

    bucket: str
    queue: Queue


@pytest.fixture(name="notified_bucket")
async def notified_bucket_fixture(s3_client: Any, sqs_client: Any) -> NotifiedBucket:
    bucket = unique("data")
    queue = await ensure_queue(sqs_client, unique("events"))
    await ensure_bucket(s3_client, bucket)
    await notify_queue(s3_client, bucket, queue.arn, events=("s3:ObjectCreated:*",))
    return NotifiedBucket(bucket, queue)


def listener_settings(db_url: str, s3: EmbeddedS3 | None = None, **overrides: Any) -> Settings:
    """Settings for an in-process listener on a free port (webhook only unless overridden)."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "host": "127.0.0.1",
        "webhook_port": free_port(),
        "webhook_tokens": "",
        "sqs_queue_urls": "",
        "drain_timeout_s": 5,
        "db_pool_max": 5,
    }
    if s3 is not None:
        values.update(s3.settings_overrides())
    values.update(overrides)
    return load_settings(**values)


def storage_settings(**overrides: Any) -> StorageSettings:
    """`SLUICE_STORAGE_*` settings for tests: short SQS waits so stopping is quick."""
    values: dict[str, Any] = {"poll": "", "kafka_topics": "", "sqs_wait_s": 1}
    values.update(overrides)
    return StorageSettings(**values)


@dataclass
class RunningListener:
    """A storage listener running in this process (`run(settings, stop)` in a task)."""

    url: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        self.stop.set()
        async with asyncio.timeout(WAIT_S):
            await self.task


@asynccontextmanager
async def running_listener(
    settings: Settings, storage: StorageSettings | None = None
) -> AsyncIterator[RunningListener]:
    """Start the listener and wait until its `/healthz` answers; stop it (drained) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, storage=storage or storage_settings()))
    url = f"http://127.0.0.1:{settings.webhook_port}"
    running = RunningListener(url, stop, task)
    try:
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool | None:
                if task.done():
                    task.result()  # raises what made it stop
                    raise AssertionError("the listener stopped before it was healthy")
                try:
                    response = await client.get(f"{url}/healthz")
                except httpx.TransportError:
                    return None
                return response.status_code == 200 or None

            await eventually(healthy)
        yield running
    finally:
        if not task.done():
            await running.shutdown()
        else:
            task.result()


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float = WAIT_S) -> T:
    """Re-run `check` until it returns something other than None; fail after `timeout_s`.

    Waits for asynchronous work (a listener admitting an upload); no test relies on timing.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            result = await check()
            if result is not None:
                return result
            await asyncio.sleep(0.02)


async def wait_for_events(pool: asyncpg.Pool[Any], count: int, **where: Any) -> list[Any]:
    """Wait until at least `count` events are recorded (optionally with subject=/source=)."""
    clauses = " AND ".join(f"{column} = ${i}" for i, column in enumerate(where, start=1))
    sql = "SELECT * FROM events" + (f" WHERE {clauses}" if clauses else "") + " ORDER BY id"

    async def recorded() -> list[Any] | None:
        rows = await pool.fetch(sql, *where.values())
        return list(rows) if len(rows) >= count else None

    return await eventually(recorded)


async def outcomes(pool: asyncpg.Pool[Any], event_id: int) -> list[tuple[str, str | None]]:
    """(outcome, detail) per trigger of one event, in order."""
    rows = await pool.fetch(
        "SELECT outcome, detail FROM event_outcomes WHERE event_id = $1 ORDER BY seq", event_id
    )
    return [(r["outcome"], r["detail"]) for r in rows]


async def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages in the queue, visible or in flight."""
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@asynccontextmanager
async def running_executor(settings: Settings) -> AsyncIterator[None]:
    """The executor service in this process, so instances run; stopped (drained) on exit.

    Not through the service entry point: that one strips credentials from the environment of
    the process it runs in, which here is the test session's."""
    from services.executor.config import ExecutorConfig
    from services.executor.service import run_executor

    stop = asyncio.Event()
    task = asyncio.create_task(run_executor(settings, ExecutorConfig.from_settings(settings), stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task


async def finished_instances(pool: asyncpg.Pool[Any], count: int) -> list[Any]:
    """Wait until `count` instances have finished; returns every instance, oldest first."""

    async def done() -> list[Any] | None:
        rows = await pool.fetch("SELECT * FROM instances ORDER BY id")
        finished = [r for r in rows if r["state"] in ("succeeded", "failed", "terminated")]
        return list(rows) if len(finished) >= count else None

    return await eventually(done, timeout_s=60)


async def node_output(pool: asyncpg.Pool[Any], instance_id: int, node: str) -> str:
    """Everything the node's attempts wrote, in order."""
    rows = await pool.fetch(
        "SELECT l.data FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id "
        "JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1 AND n.name = $2 ORDER BY a.attempt, l.seq",
        instance_id,
        node,
    )
    return "".join(r["data"] for r in rows)
