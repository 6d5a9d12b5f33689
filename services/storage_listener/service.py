"""`sluice run storage-listener`: object-storage events into workflow instances.

Sources, side by side in one TaskGroup (any one dying stops the service):
- `webhook`: always on, `POST /hooks/s3` on `SLUICE_WEBHOOK_PORT` (with `/healthz`, `/readyz`,
  `/metrics`); refuses everything until `SLUICE_WEBHOOK_TOKENS` is set.
- `sqs`: one long-polling loop per queue of `SLUICE_SQS_QUEUE_URLS`.
- `poll`: `SLUICE_STORAGE_POLL` targets listed every `SLUICE_STORAGE_POLL_INTERVAL_S`.
- `kafka`: S3 event records on `SLUICE_STORAGE_KAFKA_TOPICS` (brokers of `SLUICE_KAFKA_BOOTSTRAP`).
- `replay`: always on, the replay jobs of S3 triggers (`shared.replays`, `replay.S3Replayer`),
  listing buckets through `SLUICE_S3_ENDPOINT`.

Every source hands events to one `Admitter`, which admits concurrent submissions in shared
transactions. Each source acknowledges its store only after its events committed (contract 3).

Shutdown: `stop` makes every source stop taking work and finish what it holds (webhook requests
in flight, the current SQS receive or Kafka batch) for up to `drain_timeout_s`; whatever is still
running then is cancelled and, never having been acknowledged, is redelivered later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import structlog

from services.storage_listener import aws
from services.storage_listener.admitter import Admitter
from services.storage_listener.config import StorageSettings, load_storage_settings
from services.storage_listener.health import Health
from services.storage_listener.kafka_source import KafkaS3Source
from services.storage_listener.poll import PollSource
from services.storage_listener.replay import S3Replayer
from services.storage_listener.sqs import SqsSource, queue_name
from services.storage_listener.webhook import NO_TOKEN_DETAIL, WebhookApp, bind, serve
from shared.backpressure import Backpressure
from shared.db.pool import create_pool
from shared.kafka.config import load_listener_settings
from shared.probes import READINESS
from shared.replays import owner_id, run_replays
from shared.settings import Settings, SettingsError

log = structlog.get_logger("sluice.storage_listener")

Source = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def run(
    settings: Settings, stop: asyncio.Event, *, storage: StorageSettings | None = None
) -> None:
    """Run the configured sources until `stop` is set, then drain and return."""
    storage = storage if storage is not None else load_storage_settings()
    topics = storage.kafka_topic_list
    if topics and not settings.kafka_bootstrap:
        raise SettingsError(
            "invalid configuration: SLUICE_KAFKA_BOOTSTRAP: must be set when "
            "SLUICE_STORAGE_KAFKA_TOPICS is"
        )
    with structlog.contextvars.bound_contextvars(service="storage-listener"):
        async with AsyncExitStack() as stack:
            sock = bind(settings.host, settings.webhook_port)
            stack.callback(sock.close)
            pool = await create_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                application_name="sluice-storage-listener",
            )
            stack.push_async_callback(pool.close)
            health = Health(readiness=READINESS)
            backpressure = _backpressure(health)
            admitter = Admitter(pool, backpressure=backpressure)
            tokens = settings.webhook_token_list
            if not tokens:
                log.warning("webhook_refusing_all_requests", reason=NO_TOKEN_DETAIL)
            app = WebhookApp(
                pool=pool,
                admitter=admitter,
                tokens=tokens,
                health=health,
                max_body_bytes=settings.max_request_bytes,
            )
            sources: list[Source] = [
                partial(serve, app, sock, drain_timeout_s=settings.drain_timeout_s)
            ]
            for url in settings.sqs_queue_url_list:
                sqs = await stack.enter_async_context(
                    aws.client("sqs", aws.sqs_options(settings, url))
                )
                state = health.add(f"sqs:{queue_name(url)}", f"long-polling {url}")
                source = SqsSource(
                    sqs,
                    url,
                    admitter,
                    state,
                    wait_s=storage.sqs_wait_s,
                    visibility_timeout_s=storage.sqs_visibility_timeout_s,
                )
                sources.append(source.run)
            s3 = await stack.enter_async_context(aws.client("s3", aws.s3_options(settings)))
            sources.append(
                partial(
                    run_replays,
                    pool,
                    "s3",
                    S3Replayer(pool, s3),
                    owner=owner_id("storage-listener"),
                    poll_interval_s=settings.replay_poll_interval_s,
                    lease_s=settings.lease_s,
                    dsn=settings.database_url,
                )
            )
            targets = storage.poll_targets
            if targets:
                state = health.add(
                    "poll",
                    f"listing {', '.join(map(str, targets))} every {storage.poll_interval_s:g} s",
                )
                poller = PollSource(
                    s3,
                    pool,
                    targets,
                    state,
                    interval_s=storage.poll_interval_s,
                    backpressure=backpressure,
                )
                sources.append(poller.run)
            if topics:
                state = health.add(
                    "kafka", f"consuming {', '.join(topics)} as group {storage.kafka_group_id}"
                )
                consumer = KafkaS3Source(
                    settings,
                    topics,
                    storage.kafka_group_id,
                    admitter,
                    pool,
                    state,
                    config=load_listener_settings(
                        session_timeout_ms=storage.kafka_session_timeout_ms,
                        heartbeat_interval_ms=storage.kafka_heartbeat_interval_ms,
                    ),
                    backpressure=backpressure,
                )
                sources.append(consumer.run)
            log.info(
                "storage_listener_started",
                port=sock.getsockname()[1],
                sources=["webhook", *(s for s in health.sources if s != "webhook")],
            )
            await _supervise(sources, admitter, stop, settings.drain_timeout_s)
    log.info("storage_listener_stopped")


def _backpressure(health: Health) -> Backpressure:
    """The listener's backpressure, shown in `/readyz` under `backpressure` (always ready)."""
    state = health.add("backpressure", "no trigger held (no workflow at policy.max_waiting)")

    def show(gate: Backpressure) -> None:
        state.detail = gate.describe()
        state.info.update(gate.as_dict())
        if health.readiness is not None:
            health.readiness.set("storage-backpressure", True, state.detail)

    return Backpressure("storage-listener", on_change=show)


async def _supervise(
    sources: list[Source], admitter: Admitter, stop: asyncio.Event, drain_timeout_s: float
) -> None:
    """Run the sources and the admitter; the admitter closes once every source is done."""
    async with asyncio.TaskGroup() as group:
        admitting = group.create_task(admitter.run())
        tasks = [group.create_task(source(stop)) for source in sources]
        group.create_task(_close_after(tasks, admitter))
        group.create_task(_bound_drain(stop, [*tasks, admitting], drain_timeout_s))


async def _close_after(tasks: list[asyncio.Task[None]], admitter: Admitter) -> None:
    # Sources are done submitting: admit what they queued, then let the admitter end.
    await asyncio.wait(tasks)
    admitter.close()


async def _bound_drain(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]], drain_timeout_s: float
) -> None:
    """After `stop`, give `tasks` `drain_timeout_s` to finish, then cancel what still runs."""
    running: set[asyncio.Future[Any]] = set(tasks)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        while running and not stop.is_set():
            done, _ = await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
            running -= done
    finally:
        stopping.cancel()
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=drain_timeout_s)
    if pending:
        log.warning("drain_timeout", cancelled=len(pending), drain_timeout_s=drain_timeout_s)
        for task in pending:
            task.cancel()
