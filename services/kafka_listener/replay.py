"""Replays of Kafka triggers: re-read a topic's time or offset range with a consumer of its own.

The consumer has no group: partitions are assigned by hand and positioned with `seek`, so the
listener's group never sees it and its committed offsets stay exactly as they were. It reads from
the trigger's cluster (the platform's, or the workspace `kafka` connection the trigger names).

A time range becomes an offset range per partition through the broker's time index
(`offsets_for_times`): from the first record at or after `from` to the first at or after `to`
(or the partition's end when the lookup finds none). The whole range is measured before anything
is admitted: a range holding more records than the job's `max_events` fails without admitting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition

from services.kafka_listener.records import to_event
from shared.db import connections
from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.kafka.cluster import KafkaConnectionError, cluster_of, connection_settings
from shared.kafka.config import client_options
from shared.kafka.offsets import start_offset
from shared.models.events import IncomingEvent
from shared.models.replays import ReplayJob
from shared.models.triggers import KafkaTriggerSpec
from shared.replays import Feed, ReplayError, replayed_trigger
from shared.secret_box import SecretBox
from shared.settings import KafkaSettings

log = structlog.get_logger("sluice.kafka_listener.replay")

IDLE_TIMEOUT_S = 30.0
"""A partition that yields nothing for this long before reaching its end fails the replay."""


class KafkaReplayer:
    """The `carry` of Kafka replays (see `shared.replays.run_replays`)."""

    def __init__(
        self,
        pool: Executor,
        settings: KafkaSettings,
        box: SecretBox | None,
        *,
        max_message_bytes: int,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._box = box
        self._max_bytes = max_message_bytes
        self._idle_timeout_s = idle_timeout_s

    async def __call__(self, job: ReplayJob, feed: Feed) -> None:
        spec = await replayed_trigger(self._pool, job, "kafka", KafkaTriggerSpec)
        cluster = cluster_of(job.workspace_id, spec.connection)
        kafka = await self._cluster_settings(job, spec)
        options = client_options(kafka)
        partitions = await _partitions(options, spec.topic)
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.kafka_fetch_max_wait_ms,
            max_poll_records=kafka.kafka_max_batch,
            max_partition_fetch_bytes=max(1 << 20, self._max_bytes + (64 << 10)),
            **options,
        )
        await consumer.start()
        try:
            bounds = await _bounds(consumer, job, spec.topic, partitions)
            ranges, total = await self._measure(consumer, bounds, job.max_events)
            log.info(
                "replay_range",
                topic=spec.topic,
                records=total,
                ranges={str(tp.partition): list(r) for tp, r in ranges.items()},
            )
            await feed.heartbeat()
            await self._read(consumer, ranges, feed, cluster)
        finally:
            await consumer.stop()

    async def _measure(
        self, consumer: AIOKafkaConsumer, bounds: dict[TopicPartition, _Bound], limit: int
    ) -> tuple[dict[TopicPartition, tuple[int, int]], int]:
        """Read the range once without admitting: the exact [start, end) per partition and the
        record count, or ReplayError when it holds more than `limit` records.

        A partition's end is the bound's offset, the first record at or after the bound's time,
        or, for an open end, where the partition was caught up with. The end offsets brokers
        report are a hint only (a broker may report one behind the records it serves)."""
        todo = {tp: b for tp, b in bounds.items() if b.stop is None or b.stop > b.start}
        ends = {tp: b.start for tp, b in bounds.items()}
        counts = dict.fromkeys(todo, 0)
        if todo:
            consumer.assign(list(todo))
            for tp, bound in todo.items():
                consumer.seek(tp, bound.start)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=_CAUGHT_UP_MS)
            for tp, bound in list(todo.items()):
                finished = False
                for record in batch.get(tp, []):
                    if (bound.stop is not None and record.offset >= bound.stop) or (
                        bound.stop_ms is not None and record.timestamp >= bound.stop_ms
                    ):
                        finished = True
                        break
                    counts[tp] += 1
                    ends[tp] = record.offset + 1
                position = await consumer.position(tp)
                if not batch.get(tp) and position >= bound.hint:
                    finished = True  # caught up with the partition
                elif bound.stop is not None and position >= bound.stop:
                    finished = True
                if finished:
                    del todo[tp]
                    consumer.pause(tp)
            if sum(counts.values()) > limit:
                raise ReplayError(
                    f"the range holds more than max_events {limit} records; narrow from/to"
                )
            if batch:
                last_progress = loop.time()
            elif loop.time() - last_progress > self._idle_timeout_s:
                raise ReplayError(_waiting(todo, self._idle_timeout_s))
        consumer.unsubscribe()
        return {tp: (b.start, ends[tp]) for tp, b in bounds.items()}, sum(counts.values())

    async def _cluster_settings(self, job: ReplayJob, spec: KafkaTriggerSpec) -> KafkaSettings:
        if spec.connection is None:
            return self._settings
        name = spec.connection
        if self._box is None:
            raise ReplayError(
                f"connection {name!r}: SLUICE_SECRET_KEY is not set, so its secrets cannot be read"
            )
        try:
            resolved = await connections.resolve(self._pool, job.workspace_id, name, self._box)
        except NotFound:
            raise ReplayError(f"connection {name!r} does not exist") from None
        if resolved.kind != "kafka":
            raise ReplayError(f"connection {name!r} is of kind {resolved.kind!r}, not 'kafka'")
        try:
            return connection_settings(self._settings, name, resolved.config, resolved.secrets)
        except KafkaConnectionError as exc:
            raise ReplayError(str(exc)) from None

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        ranges: dict[TopicPartition, tuple[int, int]],
        feed: Feed,
        cluster: str | None,
    ) -> None:
        todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
        if not todo:
            return
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=200)
            received_at = datetime.now(UTC)
            events: list[IncomingEvent] = []
            for tp, records in batch.items():
                end = todo.get(tp, (0, 0))[1]
                events.extend(
                    to_event(r, received_at, self._max_bytes, cluster)
                    for r in records
                    if r.offset < end
                )
            await feed.admit(events)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp][1]:
                    del todo[tp]
                    consumer.pause(tp)
            if batch:
                last_progress = loop.time()
            elif loop.time() - last_progress > self._idle_timeout_s:
                waiting = ", ".join(
                    f"partition {tp.partition} before offset {end}"
                    for tp, (_, end) in sorted(todo.items())
                )
                raise ReplayError(f"no records arrived for {self._idle_timeout_s:g} s ({waiting})")


async def _partitions(options: dict[str, Any], topic: str) -> list[int]:
    """The topic's partitions, from a metadata request of its own."""
    client = AIOKafkaClient(**options)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
    finally:
        await client.close()
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise ReplayError(f"topic {topic!r} does not exist on the trigger's cluster")
    return sorted(partitions)


_CAUGHT_UP_MS = 300
"""A fetch this long that brings nothing at or past the reported end means the partition is
read to its end."""


@dataclass(frozen=True)
class _Bound:
    """Where reading a partition starts, and what ends it: an offset (`stop`), the first record
    at or after a time (`stop_ms`), or neither (read until caught up). `hint`: the end offset
    the broker reported."""

    start: int
    stop: int | None
    stop_ms: int | None
    hint: int


def _waiting(todo: dict[TopicPartition, _Bound], idle_s: float) -> str:
    where = ", ".join(f"partition {tp.partition} from offset {b.start}" for tp, b in todo.items())
    return f"no records arrived for {idle_s:g} s ({where})"


async def _bounds(
    consumer: AIOKafkaConsumer, job: ReplayJob, topic: str, partitions: list[int]
) -> dict[TopicPartition, _Bound]:
    """Per partition, where the range starts (within what the partition still holds) and ends."""
    tps = [TopicPartition(topic, p) for p in partitions]
    firsts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    start, stop = job.range_from, job.range_to
    if isinstance(start, dict) and isinstance(stop, dict):
        unknown = sorted(set(start) - set(partitions))
        if unknown:
            raise ReplayError(
                f"from: topic {topic!r} has no partition {unknown[0]} "
                f"(it has {len(partitions)} partitions)"
            )
        bounds = {}
        for p in sorted(start):
            tp = TopicPartition(topic, p)
            bounds[tp] = _Bound(max(start[p], firsts[tp]), stop[p], None, ends[tp])
        return bounds
    if not isinstance(start, datetime) or not isinstance(stop, datetime):
        # The request model admits only two times or two maps.
        raise ReplayError("from and to must both be times or both offset maps")
    from_ms = int(start.timestamp() * 1000)
    to_ms = int(stop.timestamp() * 1000)
    found_from = await consumer.offsets_for_times(dict.fromkeys(tps, from_ms))
    found_to = await consumer.offsets_for_times(dict.fromkeys(tps, to_ms))
    bounds = {}
    for tp in tps:
        first = _found(found_from.get(tp), from_ms)
        if first is None:
            # Nothing at or after `from` when asked: read what arrives from the end on, to `to`.
            first = ends[tp]
        last = _found(found_to.get(tp), to_ms)
        bounds[tp] = _Bound(
            max(first, firsts[tp]), last, None if last is not None else to_ms, ends[tp]
        )
    return bounds


def _found(answer: Any, at_ms: int) -> int | None:
    if answer is None:
        return None
    return start_offset((answer.offset, answer.timestamp), at_ms)
