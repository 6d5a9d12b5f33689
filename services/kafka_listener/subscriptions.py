"""Which topics to follow: those of enabled Kafka triggers, watched in the database.

Every trigger create, update and delete sends NOTIFY `sluice_triggers`; the watcher listens on a
dedicated connection and re-reads the topics at once, and also every `resubscribe_interval_s`
(the fallback for a lost notification or LISTEN connection). A database that cannot be reached
keeps the last known topics and is retried with backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from shared.db import triggers as trigger_repo
from shared.db.pool import Executor, connect
from shared.db.queries import load
from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.cluster import cluster_of
from shared.kafka.retry import Backoff
from shared.lifecycle import wait_any

Q = load(__file__)
log = structlog.get_logger("sluice.kafka_listener")

_CONNECT_TIMEOUT_S = 10.0


Wanted = dict[str | None, dict[str, int]]
"""Cluster key (``shared.kafka.cluster``; None: default) → topic → earliest trigger (ms)."""


async def enabled_topics(pool: Executor) -> Wanted:
    """Per cluster, topic → creation time (epoch ms) of the earliest enabled Kafka trigger on it."""
    wanted: Wanted = {}
    for row in await pool.fetch(Q["enabled_kafka_topics"]):
        cluster = (
            None
            if row["connection"] is None
            else cluster_of(row["workspace_id"], row["connection"])
        )
        wanted.setdefault(cluster, {})[row["subject"]] = int(row["created_at"].timestamp() * 1000)
    return wanted


async def watch_triggers(
    dsn: str,
    pool: Executor,
    apply: Callable[[Wanted], Awaitable[None]],
    stop: asyncio.Event,
    *,
    interval_s: float,
    backoff_max_s: float,
) -> None:
    """Await ``apply(wanted)`` with the enabled trigger topics now and after every change."""
    notified = asyncio.Event()
    backoff = Backoff(backoff_max_s)
    conn: asyncpg.Connection[Any] | None = None

    def wake(*_: object) -> None:
        notified.set()

    try:
        while not stop.is_set():
            if conn is None or conn.is_closed():
                conn = await _listen(dsn, wake)
            try:
                topics = await enabled_topics(pool)
            except Exception as exc:
                if not admission.is_transient(exc):
                    raise
                delay = backoff.next()
                listener_metrics.ERRORS.labels("subscribe").inc()
                log.warning(
                    "kafka_triggers_unavailable", error=admission.describe(exc), retry_in_s=delay
                )
                await wait_any(stop, None, delay)
                continue
            backoff.reset()
            await apply(topics)
            # Without a LISTEN connection, poll at the retry pace until it is back.
            wait_s = interval_s if conn is not None else min(interval_s, backoff_max_s)
            await wait_any(stop, notified, wait_s)
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=5)


async def _listen(dsn: str, wake: Callable[..., None]) -> asyncpg.Connection[Any] | None:
    conn: asyncpg.Connection[Any] | None = None
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            conn = await connect(dsn, "sluice-kafka-listener-listen")
            await conn.add_listener(trigger_repo.CHANNEL, wake)
    except Exception as exc:
        if conn is not None:
            conn.terminate()
        if not admission.is_transient(exc):
            raise
        listener_metrics.ERRORS.labels("subscribe").inc()
        log.warning("kafka_trigger_notifications_unavailable", error=admission.describe(exc))
        return None
    return conn
