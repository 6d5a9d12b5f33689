"""The storage listener service: configuration errors, drain on stop, bounded drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.storage_listener.admitter import Admitter
from services.storage_listener.service import run
from shared.settings import SettingsError
from tests.factories import add_trigger, add_workflow, s3_event, s3_trigger, workflow
from tests.support.s3 import Pool, eventually, listener_settings, storage_settings

MINIO_PUT = (
    Path(__file__).resolve().parents[1] / "fixtures" / "s3" / "minio_put.json"
).read_bytes()
HEADERS = {"Authorization": "Bearer t1"}


async def test_kafka_topics_without_brokers_fail_at_start(db_url: str) -> None:
    settings = listener_settings(db_url, kafka_bootstrap="")

    with pytest.raises(SettingsError, match="SLUICE_KAFKA_BOOTSTRAP"):
        await run(settings, asyncio.Event(), storage=storage_settings(kafka_topics="events"))


async def test_a_taken_webhook_port_is_a_clear_error(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = listener_settings(db_url, webhook_port=port)

        with pytest.raises(OSError, match=f"127.0.0.1:{port} \\(SLUICE_WEBHOOK_PORT\\)"):
            await run(settings, asyncio.Event(), storage=storage_settings())


@asynccontextmanager
async def events_locked(db_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    """Hold a lock that makes every admission wait (until the block ends)."""
    conn = await asyncpg.connect(db_url)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def admission_waiting(pool: Pool) -> bool | None:
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = 'events' AND NOT l.granted"
    )
    return True if waiting else None


async def healthy(url: str) -> bool | None:
    async with httpx.AsyncClient() as client:
        try:
            return (await client.get(f"{url}/healthz")).status_code == 200 or None
        except httpx.TransportError:
            return None


async def test_stop_lets_an_admission_in_flight_finish_and_answer(pool: Pool, db_url: str) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", "data"))
        await add_workflow(conn, workflow("wf", trigger="files"))
    settings = listener_settings(db_url, webhook_tokens="t1", drain_timeout_s=60)
    url = f"http://127.0.0.1:{settings.webhook_port}"
    stop = asyncio.Event()
    service = asyncio.create_task(run(settings, stop, storage=storage_settings()))
    await eventually(lambda: healthy(url))

    async with httpx.AsyncClient(timeout=30) as client:
        async with events_locked(db_url):
            request = asyncio.create_task(
                client.post(f"{url}/hooks/s3", content=MINIO_PUT, headers=HEADERS)
            )
            await eventually(lambda: admission_waiting(pool))
            stop.set()
            # Nothing can finish while the admission waits: the service holds the request.
            assert not request.done() and not service.done()
        response = await request
    async with asyncio.timeout(20):
        await service

    assert response.status_code == 200
    assert len(response.json()["instance_ids"]) == 1
    assert await pool.fetchval("SELECT count(*) FROM instances") == 1


async def test_the_drain_is_bounded_and_an_unfinished_admission_leaves_nothing(
    pool: Pool, db_url: str
) -> None:
    settings = listener_settings(db_url, webhook_tokens="t1", drain_timeout_s=1)
    url = f"http://127.0.0.1:{settings.webhook_port}"
    stop = asyncio.Event()
    service = asyncio.create_task(run(settings, stop, storage=storage_settings()))
    await eventually(lambda: healthy(url))

    async with httpx.AsyncClient(timeout=30) as client, events_locked(db_url):
        request = asyncio.create_task(
            client.post(f"{url}/hooks/s3", content=MINIO_PUT, headers=HEADERS)
        )
        await eventually(lambda: admission_waiting(pool))
        stop.set()
        # Returns with the lock still held: the admission was abandoned, not awaited.
        async with asyncio.timeout(20):
            await service
        outcome: Any = await asyncio.gather(request, return_exceptions=True)

    [response] = outcome
    # Never acknowledged: the store keeps the notification and delivers it again.
    assert isinstance(response, httpx.HTTPError) or response.status_code != 200
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_a_failing_submission_does_not_fail_the_others_in_its_transaction(
    pool: Pool,
) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", "data"))
        await add_workflow(conn, workflow("wf", trigger="files"))
    good = s3_event(key="input/a.csv")
    # Bypasses parsing: text PostgreSQL cannot store makes the whole transaction fail.
    bad = s3_event(key="input/b.csv").model_copy(update={"raw": "nul\x00", "message": None})
    admitter = Admitter(pool)
    # Tasks run in creation order: both are queued before the worker takes its first batch,
    # so they share one transaction.
    submissions = [
        asyncio.create_task(admitter.submit([good])),
        asyncio.create_task(admitter.submit([bad])),
    ]
    worker = asyncio.create_task(admitter.run())
    outcome = await asyncio.gather(*submissions, return_exceptions=True)
    admitter.close()
    await worker

    first, failure = outcome
    assert not isinstance(first, BaseException)
    [[admitted]] = first
    assert [o.outcome for o in admitted.outcomes] == ["admitted"]
    assert isinstance(failure, asyncpg.PostgresError)
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
