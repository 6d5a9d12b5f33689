"""The `kafka` source: S3 event records published to Kafka (MinIO's Kafka notification target).

Each message value is a notification body as the webhook would receive it (MinIO sends
`{"EventName", "Key", "Records"}`). A `getmany()` batch is admitted in one intake transaction and
each partition's offset is committed only after that commit (contract 3); a crash in between
redelivers the batch and dedup absorbs it. Undecodable values are recorded `invalid` and committed
past, so a poison message never stalls its partition. When admission fails the partitions are
rewound to the batch start and retried after a backoff.

Commits follow every admitted batch synchronously, so at a rebalance nothing admitted is left
uncommitted except the batch in flight, whose redelivery is deduplicated.

A partition the group has never committed starts at the first message produced after the earliest
enabled s3 trigger was created (less `START_SKEW` for clock differences), or at the end when no s3
trigger exists: events from before any trigger could only be `no_trigger`. Records older than that
start are also dropped client-side until the first newer one, for brokers whose time index is
coarse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.helpers import create_ssl_context

from services.storage_listener import metrics
from services.storage_listener.admitter import Admitter
from services.storage_listener.events import body_events, invalid_event
from services.storage_listener.health import SourceHealth
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.events import IncomingEvent
from shared.settings import KafkaSettings

Q = load(__file__)
log = structlog.get_logger("sluice.storage_listener.kafka")

START_SKEW: Final = timedelta(seconds=60)
_BACKOFF_MAX_S = 30.0
_FETCH_TIMEOUT_MS = 200


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    waiting = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiting}, timeout=seconds)
    finally:
        waiting.cancel()


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options (bootstrap, TLS, SASL) from `SLUICE_KAFKA_*`."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


class _StartAtTriggerCreation(ConsumerRebalanceListener):  # type: ignore[misc]
    """Positions partitions without a committed offset (see the module docstring)."""

    def __init__(self, consumer: AIOKafkaConsumer, pool: Executor, health: SourceHealth) -> None:
        self._consumer = consumer
        self._pool = pool
        self._health = health
        self.start_ms: dict[TopicPartition, int] = {}
        """Per freshly positioned partition, the timestamp its first admitted record must reach.

        Some brokers (Tansu) answer ListOffsets-by-time at a coarse granularity; older records
        that precede the start are dropped here until one at or after it is admitted.
        """

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("kafka_partitions_revoked", partitions=sorted(str(tp) for tp in revoked))
        for tp in revoked:
            self.start_ms.pop(tp, None)
        self._health.info["partitions"] = []

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka_partitions_assigned", partitions=sorted(str(tp) for tp in assigned))
        if not assigned:
            return
        # getmany() keeps running during this callback: without the pause it could read a fresh
        # partition from the reset position before the seek below moves it.
        self._consumer.pause(*assigned)
        try:
            await self._position(assigned)
        finally:
            self._consumer.resume(*assigned)
        self._health.info["partitions"] = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)

    async def _position(self, assigned: set[TopicPartition]) -> None:
        fresh = [tp for tp in sorted(assigned) if await self._consumer.committed(tp) is None]
        if not fresh:
            return
        since: datetime | None = await self._pool.fetchval(Q["earliest_s3_trigger"])
        # End offsets first: a message produced between the two requests is then found by
        # offsets_for_times rather than skipped by a later end offset.
        ends = await self._consumer.end_offsets(fresh)
        found: dict[TopicPartition, Any] = {}
        start_ms: int | None = None
        if since is not None:
            start_ms = int((since - START_SKEW).timestamp() * 1000)
            found = await self._consumer.offsets_for_times(dict.fromkeys(fresh, start_ms))
            self.start_ms.update(dict.fromkeys(fresh, start_ms))
        at_end = []
        for tp in fresh:
            answer = found.get(tp)
            # No message at or after the start: Kafka answers None, some brokers (Tansu) an
            # offset with timestamp -1, which must not mean "replay from there".
            if (
                start_ms is None
                or answer is None
                or answer.offset < 0
                or answer.timestamp < start_ms
            ):
                at_end.append(tp)
                self._consumer.seek(tp, ends[tp])
            else:
                self._consumer.seek(tp, answer.offset)
        log.info(
            "kafka_start_positions",
            since=since.isoformat() if since is not None else None,
            at_end=[str(tp) for tp in at_end],
        )


class KafkaS3Source:
    """One consumer-group member reading S3 notification bodies from `topics`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        group_id: str,
        admitter: Admitter,
        pool: Executor,
        health: SourceHealth,
        *,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3000,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._settings = settings
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._topics = topics
        self._group_id = group_id
        self._admitter = admitter
        self._pool = pool
        self._health = health
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`; admission failures rewind and retry with backoff."""
        consumer = await self._connect(stop)
        if consumer is None:
            return
        try:
            positioner = _StartAtTriggerCreation(consumer, self._pool, self._health)
            consumer.subscribe(self._topics, listener=positioner)
            log.info("kafka_source_started", topics=self._topics, group=self._group_id)
            backoff = 0.0
            while not stop.is_set():
                batch = await consumer.getmany(
                    timeout_ms=_FETCH_TIMEOUT_MS, max_records=self._settings.kafka_max_batch
                )
                if not batch:
                    continue
                try:
                    await self._process(consumer, batch, positioner.start_ms)
                except Exception as exc:
                    backoff = min(max(backoff * 2, 0.5), _BACKOFF_MAX_S)
                    self._rewind(consumer, batch)
                    metrics.SOURCE_ERRORS.labels("kafka").inc()
                    self._health.failed(f"{type(exc).__name__}: {exc}", self._clock())
                    log.error(
                        "kafka_batch_failed",
                        error=str(exc),
                        error_type=type(exc).__name__,
                        retry_in_s=backoff,
                    )
                    await _wait(stop, backoff)
                else:
                    backoff = 0.0
                    self._health.ok(self._clock())
        finally:
            await consumer.stop()
            log.info("kafka_source_stopped", topics=self._topics)

    async def _connect(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """A started consumer; brokers that are down are retried with backoff until `stop`."""
        backoff = 0.0
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                group_id=self._group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
                session_timeout_ms=self._session_timeout_ms,
                heartbeat_interval_ms=self._heartbeat_interval_ms,
                **client_options(self._settings),
            )
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                backoff = min(max(backoff * 2, 0.5), _BACKOFF_MAX_S)
                metrics.SOURCE_ERRORS.labels("kafka").inc()
                self._health.failed(f"cannot connect: {type(exc).__name__}: {exc}", self._clock())
                log.warning("kafka_connect_failed", error=str(exc), retry_in_s=backoff)
                await _wait(stop, backoff)
                continue
            self._health.ok(self._clock())
            return consumer
        return None

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, Any],
        start_ms: dict[TopicPartition, int],
    ) -> None:
        received_at = self._clock()
        events: list[IncomingEvent] = []
        reached: list[TopicPartition] = []
        skipped = 0
        for tp, records in batch.items():
            floor = start_ms.get(tp)
            for record in records:
                if floor is not None:
                    if record.timestamp < floor:
                        skipped += 1
                        continue
                    floor = None
                    reached.append(tp)
                origin = f"kafka:{tp.topic}/{tp.partition}/{record.offset}"
                if record.value is None:
                    found = [invalid_event(b"", "message has no value", received_at, origin=origin)]
                else:
                    found = body_events(record.value, received_at, origin=origin)
                metrics.NOTIFICATIONS.labels(
                    "kafka",
                    "invalid" if any(e.error for e in found) else ("records" if found else "empty"),
                ).inc()
                events.extend(found)
        if skipped:
            log.info("kafka_skipped_before_start", records=skipped)
        await self._admitter.submit(events)
        for tp in reached:
            start_ms.pop(tp, None)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved to another member, which redelivers; dedup absorbs it.
            log.warning("kafka_commit_failed", error=str(exc))

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, Any]) -> None:
        for tp, records in batch.items():
            if records:
                try:
                    consumer.seek(tp, records[0].offset)
                except Exception as exc:  # the partition may have been revoked meanwhile
                    log.warning("kafka_rewind_failed", partition=str(tp), error=str(exc))
