"""The `poll` source: for stores without notifications, list buckets and admit what is new.

Every `interval_s`, each configured `bucket/prefix` is listed with ListObjectsV2. A (key, ETag)
pair not seen before becomes an `s3:ObjectCreated:Put` event whose `eventSource` is
`sluice:poll`; its dedup key under `etag` is the one a notification of the same upload would
have, so a store that is both polled and notifying admits the object once.

What was seen lives in PostgreSQL (`storage_poll_objects`), claimed in the same transaction that
admits the events: a restart, a crash or a second replica never admits an unchanged object twice,
and a claim is never kept for an event that was not admitted.

Only buckets some enabled s3 trigger watches are listed. Objects last modified more than
`CUTOFF_SKEW` before the bucket's first enabled trigger was created are the bucket's existing
content: they are marked seen without starting runs (the polling counterpart of starting a Kafka
topic at the trigger's creation time). The skew absorbs storage listings' one-second precision and
clock differences between the store and the database.

Backpressure (`policy.max_waiting`): the counts are read once per listed page; a target whose
bucket has a held trigger is not listed that round, and a page with an event for a held trigger is
rolled back (claims included) and ends the target's listing: its objects are found again later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from services.storage_listener import metrics
from services.storage_listener.config import PollTarget
from services.storage_listener.events import record_event
from services.storage_listener.formats import S3Record, object_created_message
from services.storage_listener.health import SourceHealth
from shared.backpressure import Backpressure, HeldBack
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.intake import admit_batch

Q = load(__file__)
log = structlog.get_logger("sluice.storage_listener.poll")

CUTOFF_SKEW: Final = timedelta(seconds=60)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@asynccontextmanager
async def _connection(pool: Executor) -> AsyncIterator[Connection]:
    if isinstance(pool, asyncpg.Pool):
        async with pool.acquire() as conn:
            yield conn
    else:
        yield pool


class PollSource:
    """Lists the configured targets every `interval_s` and admits new or changed objects."""

    def __init__(
        self,
        client: Any,
        pool: Executor,
        targets: list[PollTarget],
        health: SourceHealth,
        *,
        interval_s: float,
        page_size: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
        backpressure: Backpressure | None = None,
    ) -> None:
        self._backpressure = backpressure
        self._client = client
        self._page_size = page_size
        self._pool = pool
        self._targets = targets
        self._health = health
        self._interval_s = interval_s
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop`; a failing target is logged and retried at the next round."""
        log.info(
            "poll_source_started",
            targets=[str(t) for t in self._targets],
            interval_s=self._interval_s,
        )
        while not stop.is_set():
            await self.poll_once(stop)
            waiting = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiting}, timeout=self._interval_s)
            finally:
                waiting.cancel()
        log.info("poll_source_stopped")

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """List every target once; returns how many objects were admitted as new."""
        try:
            rows = await self._pool.fetch(
                Q["trigger_cutoffs"], sorted({t.bucket for t in self._targets})
            )
        except Exception as exc:
            self._failed("database", exc)
            return 0
        cutoffs: dict[str, datetime] = {r["bucket"]: r["created_at"] for r in rows}
        if self._backpressure is not None:
            try:
                await self._backpressure.refresh(self._pool)
            except Exception as exc:
                self._failed("database", exc)
                return 0
        admitted = 0
        failed = False
        for target in self._targets:
            if stop is not None and stop.is_set():
                break
            created = cutoffs.get(target.bucket)
            if created is None:
                log.debug("poll_target_skipped", target=str(target), reason="no enabled trigger")
                continue
            try:
                if self._held(target.bucket):
                    log.info("poll_target_held", target=str(target))
                    continue
                admitted += await self._poll_target(target, created - CUTOFF_SKEW, stop)
            except Exception as exc:
                failed = True
                self._failed(str(target), exc)
        if not failed:
            self._health.ok(self._clock())
        return admitted

    def _held(self, bucket: str) -> bool:
        gate = self._backpressure
        return gate is not None and any(
            h.type == "s3" and h.subject == bucket for h in gate.holds()
        )

    def _failed(self, where: str, exc: Exception) -> None:
        metrics.SOURCE_ERRORS.labels("poll").inc()
        self._health.failed(f"{where}: {type(exc).__name__}: {exc}", self._clock())
        log.error("poll_failed", target=where, error=str(exc), error_type=type(exc).__name__)

    async def _poll_target(
        self, target: PollTarget, cutoff: datetime, stop: asyncio.Event | None
    ) -> int:
        admitted = 0
        paginator = self._client.get_paginator("list_objects_v2")
        pages = {"PageSize": self._page_size} if self._page_size else {}
        async for page in paginator.paginate(
            Bucket=target.bucket, Prefix=target.prefix, PaginationConfig=pages
        ):
            contents: list[dict[str, Any]] = page.get("Contents") or []
            if contents:
                try:
                    admitted += await self._admit_page(target.bucket, contents, cutoff)
                except HeldBack as held:
                    log.info("poll_target_held", target=str(target), reason=held.hold.reason)
                    break
            if stop is not None and stop.is_set():
                break
        return admitted

    async def _admit_page(
        self, bucket: str, contents: list[dict[str, Any]], cutoff: datetime
    ) -> int:
        received_at = self._clock()
        records: dict[str, tuple[S3Record, datetime]] = {}
        for item in contents:
            modified: datetime = item["LastModified"]
            record = object_created_message(
                bucket, item["Key"], item.get("ETag") or "", int(item.get("Size") or 0), modified
            )
            records[record.key] = (record, modified)
        keys = list(records)
        etags = [records[k][0].etag or "" for k in keys]
        async with _connection(self._pool) as conn, conn.transaction():
            changed = {r["key"] for r in await conn.fetch(Q["claim_objects"], bucket, keys, etags)}
            fresh = [records[k][0] for k in keys if k in changed and records[k][1] >= cutoff]
            if fresh:
                events = [record_event(r, received_at) for r in fresh]
                if self._backpressure is not None:
                    await self._backpressure.refresh(conn)
                    hold = next(filter(None, map(self._backpressure.holding, events)), None)
                    if hold is not None:
                        raise HeldBack(hold)  # rolls the claims back with the page
                await admit_batch(conn, events)
        metrics.POLLED_OBJECTS.labels("new").inc(len(fresh))
        metrics.POLLED_OBJECTS.labels("before_trigger").inc(len(changed) - len(fresh))
        metrics.POLLED_OBJECTS.labels("unchanged").inc(len(keys) - len(changed))
        if fresh:
            log.info("poll_objects_admitted", bucket=bucket, count=len(fresh))
        return len(fresh)
