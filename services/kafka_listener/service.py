"""`sluice run kafka-listener`: Kafka messages into workflow instances.

Three tasks in one TaskGroup (any one failing stops the service):
- the trigger watcher (`subscriptions.watch_triggers`): the topics of enabled Kafka triggers,
  re-read on NOTIFY `sluice_triggers` and every `SLUICE_KAFKA_RESUBSCRIBE_INTERVAL_S`;
- the consumer-group members (`clusters.Clusters`: one `consumer.KafkaListener` per Kafka
  cluster the triggers read from, the default one always): fetch → admit → commit;
- the replay jobs of Kafka triggers (`shared.replays`, `replay.KafkaReplayer`), read with
  consumers outside the group.

Key contracts upheld here: an offset is committed only after the intake transaction
that recorded its message (and created its instances) has committed (3); a crash in between makes
Kafka redeliver the message and the admission's UNIQUE dedup key absorbs it (2).

Shutdown: `stop` ends fetching; what was fetched is admitted and committed for up to
`drain_timeout_s`, then cancelled (never committed, so redelivered later); the member leaves the
group so its partitions move at once. A broker or database that cannot be reached is retried with
backoff and reported in the log, in `sluice_kafka_listener_errors_total` and in `/readyz`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from services.kafka_listener.clusters import Clusters
from services.kafka_listener.replay import KafkaReplayer
from services.kafka_listener.subscriptions import watch_triggers
from shared.db.pool import create_pool
from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.config import (
    ListenerSettings,
    client_options,
    describe_connection,
    load_listener_settings,
)
from shared.kafka.retry import Backoff, sleep_or_stop
from shared.replays import owner_id, run_replays
from shared.settings import Settings

log = structlog.get_logger("sluice.kafka_listener")


async def run(
    settings: Settings, stop: asyncio.Event, *, config: ListenerSettings | None = None
) -> None:
    """Run the Kafka listener until `stop` is set, then drain and return."""
    config = config if config is not None else load_listener_settings()
    client_options(settings)  # bad Kafka settings fail here, naming the variable
    with structlog.contextvars.bound_contextvars(service="kafka-listener"):
        pool = await _open_pool(settings, config, stop)
        if pool is None:
            return
        try:
            box = settings.secret_box() if settings.secret_key else None
            clusters = Clusters(settings, config, pool, box)
            log.info(
                "kafka_listener_started",
                group=settings.kafka_group_id,
                **describe_connection(settings),
            )
            async with asyncio.TaskGroup() as group:
                consuming = group.create_task(clusters.run(stop))
                group.create_task(
                    watch_triggers(
                        settings.database_url,
                        pool,
                        clusters.apply,
                        stop,
                        interval_s=config.resubscribe_interval_s,
                        backoff_max_s=config.backoff_max_s,
                    )
                )
                group.create_task(_bound_drain(stop, consuming, settings.drain_timeout_s))
                group.create_task(
                    run_replays(
                        pool,
                        "kafka",
                        KafkaReplayer(
                            pool, settings, box, max_message_bytes=config.max_message_bytes
                        ),
                        stop,
                        owner=owner_id("kafka-listener"),
                        poll_interval_s=settings.replay_poll_interval_s,
                        lease_s=settings.lease_s,
                        dsn=settings.database_url,
                    )
                )
        finally:
            await pool.close()


async def _open_pool(
    settings: Settings, config: ListenerSettings, stop: asyncio.Event
) -> asyncpg.Pool[Any] | None:
    """The database pool; an unreachable database is retried until `stop` (None then)."""
    backoff = Backoff(config.backoff_max_s)
    while not stop.is_set():
        try:
            return await create_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                application_name="sluice-kafka-listener",
            )
        except Exception as exc:
            if not admission.is_transient(exc):
                raise
            delay = backoff.next()
            listener_metrics.ERRORS.labels("database").inc()
            log.warning("database_unavailable", error=admission.describe(exc), retry_in_s=delay)
            await sleep_or_stop(stop, delay)
    return None


async def _bound_drain(stop: asyncio.Event, task: asyncio.Task[None], drain_s: float) -> None:
    """After `stop`, give `task` `drain_s` to admit and commit what it fetched, then cancel it."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return
    _, pending = await asyncio.wait({task}, timeout=drain_s)
    if pending:
        log.warning("drain_timeout", drain_timeout_s=drain_s)
        task.cancel()
