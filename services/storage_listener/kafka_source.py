"""The `kafka` source: S3 event records published to Kafka (MinIO's Kafka notification target).

It is the Kafka intake of the kafka_listener (``shared.kafka.member``), not a second one: the same
consumer settings, offset tracking (an offset is committed only after its admission committed),
rebalance handling, start position, poison isolation, stall detection and audit. What is its own:

- decoding: each message value is a notification body as the webhook would receive it (MinIO
  sends `{"EventName", "Key", "Records"}`); a value that is not one, or no value at all, is one
  event recorded `invalid` with the reason (ref `kafka:topic/partition/offset`), so a poison
  message gets its audit row and never stalls its partition;
- admission: through the listener's shared ``Admitter`` (group commit with the other sources);
  a batch the database refuses for its data is split and the offending event recorded `invalid`;
- start: a partition the group never committed starts at the first message produced after the
  earliest enabled s3 trigger was created (less `START_SKEW` for clock differences), or at its
  end while no s3 trigger exists, re-read every `SLUICE_KAFKA_RESUBSCRIBE_INTERVAL_S`. Records
  read are never dropped for their age: a record older than every trigger is admitted and
  recorded `no_trigger` like any other;
- backpressure (`policy.max_waiting`): a notification topic carries any bucket's events, so while
  any s3 trigger is held its topics are paused (records put back, nothing committed) and resumed
  once none is; the member checks before each batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from aiokafka import TopicPartition

from services.storage_listener import metrics
from services.storage_listener.admitter import Admitter
from services.storage_listener.events import body_events, invalid_event
from services.storage_listener.health import SourceHealth
from shared.backpressure import Backpressure
from shared.db.pool import Executor
from shared.db.queries import load
from shared.kafka import admission
from shared.kafka.config import ListenerSettings
from shared.kafka.member import KafkaListener
from shared.kafka.retry import Backoff, sleep_or_stop
from shared.kafka.state import TopicHolds
from shared.models.events import IncomingEvent
from shared.settings import KafkaSettings

Q = load(__file__)
log = structlog.get_logger("sluice.storage_listener.kafka")

START_SKEW: Final = timedelta(seconds=60)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def decode(record: Any, received_at: datetime) -> list[IncomingEvent]:
    """The events of one S3 notification record; a record that is not one is one invalid event."""
    origin = f"kafka:{record.topic}/{record.partition}/{record.offset}"
    if record.value is None:
        found = [invalid_event(b"", "message has no value", received_at, origin=origin)]
    else:
        found = body_events(record.value, received_at, origin=origin)
    metrics.NOTIFICATIONS.labels(
        "kafka", "invalid" if any(e.error for e in found) else ("records" if found else "empty")
    ).inc()
    return found


class _HealthReadiness:
    """The member's readiness reports, as the storage listener's `/readyz` shows sources."""

    def __init__(self, health: SourceHealth, clock: Callable[[], datetime]) -> None:
        self._health = health
        self._clock = clock

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self._health.ok(self._clock())
        else:
            self._health.failed(detail, self._clock())


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
        config: ListenerSettings | None = None,
        clock: Callable[[], datetime] = _utcnow,
        backpressure: Backpressure | None = None,
    ) -> None:
        self._topics = topics
        self._backpressure = backpressure
        self._pool = pool
        self._config = config if config is not None else ListenerSettings()
        self._health = health
        self._member = KafkaListener(
            settings.model_copy(update={"kafka_group_id": group_id}),
            self._config,
            admitter.submit,
            decode,
            clock=clock,
            readiness=_HealthReadiness(health, clock),
            component="storage-kafka",
            on_assignment=self._assigned,
            hold_topics=self._holds if backpressure is not None else None,
        )

    async def _holds(self) -> TopicHolds:
        gate = self._backpressure
        assert gate is not None
        await gate.refresh(self._pool)
        topics = frozenset(self._topics)
        held = any(h.type == "s3" for h in gate.holds())
        return TopicHolds(
            held=topics if held else frozenset(),
            bounded=topics if gate.bounds("s3") else frozenset(),
        )

    def _assigned(self, partitions: Collection[TopicPartition]) -> None:
        self._health.info["partitions"] = sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`; the start time follows the s3 triggers meanwhile."""
        log.info("kafka_source_started", topics=self._topics)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_triggers(stop))
            group.create_task(self._member.run(stop))
        log.info("kafka_source_stopped", topics=self._topics)

    async def _follow_triggers(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self._config.backoff_max_s)
        while not stop.is_set():
            try:
                since: datetime | None = await self._pool.fetchval(Q["earliest_s3_trigger"])
            except Exception as exc:
                if not admission.is_transient(exc):
                    raise
                delay = backoff.next()
                log.warning("kafka_triggers_unavailable", error=admission.describe(exc))
                await sleep_or_stop(stop, delay)
                continue
            backoff.reset()
            start = None if since is None else int((since - START_SKEW).timestamp() * 1000)
            self._member.set_topics(dict.fromkeys(self._topics, start))
            await sleep_or_stop(stop, self._config.resubscribe_interval_s)
