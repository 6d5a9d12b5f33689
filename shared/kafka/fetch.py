"""The Kafka intake member, part 3: the fetch loop, backpressure and fetch errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
)

from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.rebalance import Rebalancing
from shared.kafka.retry import Backoff, sleep_or_stop, wait_for_event
from shared.kafka.state import (
    FETCH_TIMEOUT_MS,
    HELD_FETCH_TIMEOUT_MS,
    KEEPALIVE_FETCH_MS,
    SETTLE_WAIT_S,
    Work,
    getmany_or_stop,
    log,
)


class Fetching(Rebalancing):
    """Fetch, hold and hand batches to admission; handle what ``getmany`` raises."""

    async def _fetch_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Fetch and hand batches to admission. An idle admission gets what was fetched at once
        (latency); a busy one gets batches that grew while it worked, up to
        ``kafka_max_batch`` records (throughput: one transaction for many events)."""
        backoff = Backoff(self._config.backoff_max_s)
        limit = self._kafka.kafka_max_batch
        try:
            while not stop.is_set():
                held = self._held_count
                if held and (
                    self._in_flight == 0
                    or (held >= limit and self._in_flight < self._config.in_flight_batches)
                ):
                    self._hand_out()
                    continue
                if held >= limit:
                    await self._wait_for_room(consumer, stop)
                    continue
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                if not self._subscribed:
                    # getmany() without a subscription waits for one, ignoring its timeout.
                    await wait_for_event(self._has_topics, stop, SETTLE_WAIT_S)
                    continue
                try:
                    batch = await getmany_or_stop(
                        consumer,
                        stop,
                        # While records are held, come back soon: admission finishing is the
                        # cue to hand them out.
                        timeout_ms=HELD_FETCH_TIMEOUT_MS if held else FETCH_TIMEOUT_MS,
                        max_records=limit - held,
                    )
                except NoOffsetForPartitionError as exc:
                    await self._unpositioned(consumer, exc, stop)
                    continue
                except OffsetOutOfRangeError as exc:
                    await self._out_of_range(consumer, exc)
                    continue
                except TopicAuthorizationFailedError as exc:
                    self._refuse(exc)
                    continue
                except ConsumerStoppedError:
                    return
                except KafkaError as exc:
                    delay = backoff.next()
                    listener_metrics.ERRORS.labels("fetch").inc()
                    log.warning(
                        "kafka_fetch_failed", error=admission.describe(exc), retry_in_s=delay
                    )
                    await sleep_or_stop(stop, delay)
                    continue
                backoff.reset()
                self._hold(batch)
        finally:
            # Whatever was fetched but not handed out is dropped: it was never committed.
            self._held.clear()
            self._held_count = 0
            self._queue.put_nowait(None)

    def _hold(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            if records:
                self._held.setdefault(tp, []).extend(records)
                self._held_count += len(records)

    def _hand_out(self) -> None:
        """Turn the held records into one batch of events and queue it for admission."""
        received_at = self._clock()
        work = Work()
        for tp, records in self._held.items():
            work.generations[tp] = self._generation[tp]
            for record in records:
                for event in self._decode(record, received_at):
                    work.events.append(event)
                    work.positions.append((tp, record.offset))
            work.offsets[tp] = [record.offset for record in records]
            self._tracker.handed_out(tp, work.offsets[tp])
        self._held = {}
        self._held_count = 0
        self._in_flight += 1
        self._queue.put_nowait(work)

    async def _wait_for_room(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Wait for admission to take a batch. While it takes long (the database is down), the
        partitions are paused and ``getmany`` keeps the group membership alive: a member that
        does not fetch for ``max_poll_interval_ms`` is dropped from the group. (aiokafka 0.14
        stops counting idleness once a ``getmany`` call has raised, as it does while a fresh
        partition has no position; the keepalive costs little and does not rely on that.)"""
        self._room.clear()
        keepalive_s = min(10.0, self._config.max_poll_interval_ms / 3000)
        if await wait_for_event(self._room, stop, keepalive_s) or stop.is_set():
            return
        assigned = consumer.assignment()
        fetchable = assigned - consumer.paused()
        if fetchable:
            consumer.pause(*fetchable)
        try:
            # Only partitions assigned after the pause (a rebalance) can return records here.
            self._hold(
                await getmany_or_stop(
                    consumer,
                    stop,
                    timeout_ms=KEEPALIVE_FETCH_MS,
                    max_records=self._kafka.kafka_max_batch,
                )
            )
        except (KafkaError, ConsumerStoppedError) as exc:
            log.debug("kafka_keepalive_fetch_failed", error=admission.describe(exc))

    async def _unpositioned(
        self, consumer: AIOKafkaConsumer, exc: NoOffsetForPartitionError, stop: asyncio.Event
    ) -> None:
        """A partition has no position yet: the assignment callback is still choosing it, or
        failed to (broker unavailable), in which case it is positioned here, with backoff."""
        if not self._settled.is_set():
            await wait_for_event(self._settled, stop, SETTLE_WAIT_S)
            return
        tp = exc.args[0] if exc.args and isinstance(exc.args[0], TopicPartition) else None
        if tp in self._positioned:
            # An error the fetcher recorded before the seek is raised once; should it come
            # again, the partition really lost its position and is placed anew.
            self._positioned.discard(tp)
            return
        pending = ({tp} if tp is not None else consumer.assignment()) - self._positioned
        pending &= consumer.assignment()
        if not pending:
            await sleep_or_stop(stop, SETTLE_WAIT_S / 10)
            return
        if await self._position(consumer, pending):
            delay = min(self._config.backoff_max_s, 1.0)
            await sleep_or_stop(stop, delay)

    async def _out_of_range(self, consumer: AIOKafkaConsumer, exc: OffsetOutOfRangeError) -> None:
        """The position is gone (retention deleted it, or the topic was recreated): continue at
        the earliest offset still available, as Kafka's ``earliest`` reset would."""
        moved = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        partitions = [tp for tp in moved if tp in consumer.assignment()]
        if not partitions:
            return
        try:
            async with asyncio.timeout(self._config.request_timeout_ms / 1000):
                earliest = await consumer.beginning_offsets(partitions)
        except (KafkaError, TimeoutError) as error:
            listener_metrics.ERRORS.labels("position").inc()
            log.warning("kafka_position_failed", error=admission.describe(error))
            return
        for tp in partitions:
            log.warning(
                "kafka_offset_out_of_range",
                partition=f"{tp.topic}/{tp.partition}",
                offset=moved[tp],
                restart_at=earliest[tp],
            )
            consumer.seek(tp, earliest[tp])
            if tp in self._committed:
                self._committed[tp] = earliest[tp]

    def _refuse(self, exc: TopicAuthorizationFailedError) -> None:
        """Leave a topic the broker refuses to serve out for a while: while it stays in the
        subscription every fetch raises, which would stall the other topics too."""
        topic = str(exc.args[0]) if exc.args else ""
        listener_metrics.ERRORS.labels("fetch").inc()
        retry_at = asyncio.get_running_loop().time() + self._config.backoff_max_s
        log.error("kafka_topic_not_authorized", topic=topic, retry_in_s=self._config.backoff_max_s)
        self._readiness.set(self._component, False, f"topic {topic!r} is not authorized")
        self._refused[topic] = retry_at
        self._wanted_changed.set()

    # ---------------------------------------------------------------------------------------
