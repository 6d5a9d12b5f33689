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
    HOLD_RECHECK_S,
    KEEPALIVE_FETCH_MS,
    SETTLE_WAIT_S,
    Work,
    getmany_or_stop,
    log,
    partition_names,
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
                    or (held >= limit and self._in_flight < self._max_in_flight())
                ):
                    if not await self._hold_back(consumer):
                        self._hand_out()
                    continue
                if held >= limit:
                    await self._wait_for_room(consumer, stop)
                    continue
                resumable = consumer.paused() - self._paused_for_holds(consumer)
                if resumable:
                    consumer.resume(*resumable)
                if self._holds.held and self._hold_recheck_due():
                    await self._hold_back(consumer)
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

    # ---------------------------------------------------------------------------------------
    # Backpressure of the workflows fed (policy.max_waiting; shared.backpressure)

    def _max_in_flight(self) -> int:
        # Batches of bounded topics go one at a time: the counts each is checked against then
        # include every batch before it, so a full workflow overshoots by one batch at most.
        return 1 if self._holds.bounded else self._config.in_flight_batches

    def _paused_for_holds(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        return {tp for tp in consumer.assignment() if tp.topic in self._holds.held}

    def _hold_recheck_due(self) -> bool:
        return asyncio.get_running_loop().time() - self._holds_checked_at >= HOLD_RECHECK_S

    async def _hold_back(self, consumer: AIOKafkaConsumer) -> bool:
        """Read the counts, pause the partitions of held topics and resume the others; records
        of held topics fetched but not yet handed out are put back: the partition is sought
        back to the first of them, so they are neither admitted nor committed now and are
        fetched again on resume. True when records were put back."""
        if self._hold_topics is None:
            return False
        self._holds_checked_at = asyncio.get_running_loop().time()
        try:
            # Bounded like admission: a hung connection must not stop the fetch loop.
            async with asyncio.timeout(self._config.admit_timeout_s):
                self._holds = await self._hold_topics()
        except Exception as exc:
            # The admission of the batch meets the same database and retries; until then the
            # last answer stands.
            if not admission.is_transient(exc):
                raise
            listener_metrics.ERRORS.labels("database").inc()
            log.warning("kafka_backpressure_check_failed", error=admission.describe(exc))
        held = self._paused_for_holds(consumer)
        resume = consumer.paused() & {
            tp for tp in consumer.assignment() if tp.topic not in self._holds.held
        }
        if resume:
            consumer.resume(*resume)
            log.info("kafka_backpressure_resumed", partitions=partition_names(resume))
        pause = held - consumer.paused()
        if pause:
            consumer.pause(*pause)
            log.info("kafka_backpressure_paused", partitions=partition_names(pause))
        back = [tp for tp in self._held if tp in held]
        put_back = 0
        for tp in back:
            records = self._held.pop(tp)
            self._held_count -= len(records)
            put_back += len(records)
            consumer.seek(tp, records[0].offset)
        if put_back:
            listener_metrics.SKIPPED.labels("backpressure").inc(put_back)
        return put_back > 0

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
