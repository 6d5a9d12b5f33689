"""The Kafka listener's consumer-group member: fetch → admit → commit.

One ``AIOKafkaConsumer`` (manual commits, ``auto_offset_reset="none"``) follows the union of the
topics of enabled Kafka triggers. Three loops share it:

- fetch: ``getmany()`` batches become events (``records.to_event``: one per record, poison
  included) and are queued for admission. At most ``in_flight_batches`` wait; when admission
  falls behind, fetching waits too (backpressure), and if it waits long the assigned partitions
  are paused while ``getmany()`` keeps the group membership alive.
- admission: one intake transaction per batch (``admission.admit``), then the offsets of every
  partition are committed up to the longest admitted run (``offsets.OffsetTracker``). A database
  failure retries the batch with backoff; nothing is committed before its admission commits.
- subscription: applies the topics the trigger watcher asks for. Offsets admitted so far are
  committed first: aiokafka cannot commit the old assignment once the subscription changed.

Rebalances (``on_partitions_revoked`` / ``on_partitions_assigned``; aiokafka swallows what they
raise, so they handle their own errors): a revocation waits (up to ``revoke_wait_s``) for the
batch being admitted, commits what is admitted and drops the rest of the revoked partitions' work;
it is fetched again by whoever gets them and deduplication absorbs it. An assignment positions
each partition: its committed offset, else the first message at or after the creation of the
earliest enabled trigger on its topic (``offsets_for_times``), else its end. Until then
``getmany()`` raises ``NoOffsetForPartitionError``, and the fetch loop waits for the callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
)

from services.kafka_listener import admission
from services.kafka_listener import metrics as listener_metrics
from services.kafka_listener.config import ListenerSettings, client_options, describe_connection
from services.kafka_listener.offsets import OffsetTracker, start_offset
from services.kafka_listener.records import KafkaRecord, to_event
from shared import metrics
from shared.db.pool import Executor
from shared.kafka.stall import StallState, StallWatch
from shared.models.events import IncomingEvent
from shared.probes import READINESS, Readiness
from shared.settings import KafkaSettings

log = structlog.get_logger("sluice.kafka_listener")

READINESS_COMPONENT = "kafka"
_FETCH_TIMEOUT_MS = 100
_HELD_FETCH_TIMEOUT_MS = 5
_KEEPALIVE_FETCH_MS = 100
_SETTLE_WAIT_S = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Backoff:
    """Exponential retry delays: 0.5 s, 1 s, 2 s, ... up to ``maximum``; ``reset`` on success."""

    def __init__(self, maximum: float, first: float = 0.5) -> None:
        self._maximum = maximum
        self._first = min(first, maximum)
        self._current = 0.0

    def next(self) -> float:
        """The delay before the next try."""
        self._current = min(self._maximum, self._current * 2 if self._current else self._first)
        return self._current

    def reset(self) -> None:
        self._current = 0.0


async def wait_for_event(event: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` or ``stop`` is set or ``timeout_s`` passes; True when ``event`` is."""
    if event.is_set():
        return True
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return event.is_set()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True when stopping."""
    if not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
    return stop.is_set()


async def _getmany(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, **options: Any
) -> dict[TopicPartition, list[Any]]:
    """``getmany`` that returns nothing once ``stop`` is set: during a rebalance it waits for the
    assignment whatever its timeout says. Cancelling it there drains no records; it is done only
    when stopping, because aiokafka then no longer counts the consumer as idle (its
    ``max_poll_interval_ms`` check would stop working)."""
    fetching = asyncio.ensure_future(consumer.getmany(**options))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not fetching.done():
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
    if fetching.cancelled():
        return {}
    records: dict[TopicPartition, list[Any]] = fetching.result()
    return records


def _names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


@dataclass
class _Work:
    """One fetched batch on its way to admission: an event per record, in fetch order."""

    events: list[IncomingEvent] = field(default_factory=list)
    positions: list[tuple[TopicPartition, int]] = field(default_factory=list)
    generations: dict[TopicPartition, int] = field(default_factory=dict)


class KafkaListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer-group member of one listener process (see the module docstring).

    ``set_topics`` tells it what to follow; ``run(stop)`` consumes until ``stop`` is set, then
    admits and commits what it fetched (the caller bounds that drain) and leaves the group.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        config: ListenerSettings,
        pool: Executor,
        *,
        clock: Callable[[], datetime] = utcnow,
        readiness: Readiness = READINESS,
    ) -> None:
        self._kafka = kafka
        self._config = config
        self._pool = pool
        self._clock = clock
        self._readiness = readiness
        self._wanted: dict[str, int] = {}
        """Topic → creation time (epoch ms) of the earliest enabled trigger on it."""
        self._wanted_changed = asyncio.Event()
        self._refused: dict[str, float] = {}
        """Topics the broker refused to serve (authorization) → when to try them again."""
        self._batches_admitted = 0
        self._stall: StallWatch[TopicPartition] = StallWatch(
            config.stall_report_s, config.stall_rejoin_s
        )
        self._stalled = False
        self._rejoin = asyncio.Event()
        """Set to end the current consumer session so that a new one joins the group afresh."""
        # Per consumer session (reset when the consumer is recreated):
        self._consumer: AIOKafkaConsumer | None = None
        self._subscribed: list[str] = []
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._generation: defaultdict[TopicPartition, int] = defaultdict(int)
        """Bumped when a partition is revoked: work fetched before is stale."""
        self._held: dict[TopicPartition, list[KafkaRecord]] = {}
        """Fetched records not yet handed to admission."""
        self._held_count = 0
        self._positioned: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        """Last committed (or start) offset per assigned partition, for the lag metric."""
        self._queue: asyncio.Queue[_Work | None] = asyncio.Queue()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._busy = asyncio.Lock()
        """Held while a batch is admitted and committed; rebalances wait for it."""
        self._settled = asyncio.Event()
        """Clear from a revocation until the next assignment has positioned its partitions."""
        self._has_topics = asyncio.Event()
        """Set while the consumer is subscribed to at least one topic."""
        self._settled.set()
        self._joined = False
        """Whether the last rebalance completed (an assignment, possibly empty, was received)."""
        self._reset_suspects: set[TopicPartition] = set()
        """Partitions whose log was seen ending below the commit at the last probe."""

    # ---------------------------------------------------------------------------------------
    # What to follow

    def set_topics(self, topics: Mapping[str, int]) -> None:
        """Follow these topics (topic → earliest trigger creation, epoch ms) from now on."""
        wanted = dict(topics)
        if wanted != self._wanted:
            self._wanted = wanted
            self._wanted_changed.set()

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a broker that cannot be reached is retried with backoff."""
        backoff = Backoff(self._config.backoff_max_s)
        while not stop.is_set():
            consumer = self._new_consumer()
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                await self._stop_consumer(consumer)
                delay = backoff.next()
                listener_metrics.ERRORS.labels("connect").inc()
                listener_metrics.BROKER_UP.set(0)
                self._readiness.set(
                    READINESS_COMPONENT, False, f"cannot connect: {type(exc).__name__}"
                )
                log.warning(
                    "kafka_connect_failed",
                    error=admission.describe(exc),
                    retry_in_s=delay,
                    **describe_connection(self._kafka),
                )
                await sleep_or_stop(stop, delay)
                continue
            backoff.reset()
            listener_metrics.BROKER_UP.set(1)
            self._readiness.set(
                READINESS_COMPONENT, True, f"connected as group {self._kafka.kafka_group_id}"
            )
            log.info(
                "kafka_listener_connected",
                group=self._kafka.kafka_group_id,
                **describe_connection(self._kafka),
            )
            try:
                await self._session(consumer, stop)
            finally:
                await self._stop_consumer(consumer)
                self._consumer = None
        log.info("kafka_listener_stopped", group=self._kafka.kafka_group_id)

    def _new_consumer(self) -> AIOKafkaConsumer:
        config = self._config
        return AIOKafkaConsumer(
            group_id=self._kafka.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=self._kafka.kafka_fetch_max_wait_ms,
            max_poll_records=self._kafka.kafka_max_batch,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            metadata_max_age_ms=config.metadata_max_age_ms,
            request_timeout_ms=config.request_timeout_ms,
            # A record as large as the listener accepts must fit in one fetch, or the partition
            # could not move past it (records over the limit are recorded invalid).
            max_partition_fetch_bytes=max(1 << 20, config.max_message_bytes + (64 << 10)),
            **client_options(self._kafka),
        )

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async with asyncio.timeout(self._config.commit_timeout_s):
                await consumer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka_consumer_stop_failed", error=admission.describe(exc))

    def _reset_session_state(self) -> None:
        self._consumer = None
        self._subscribed = []
        self._tracker = OffsetTracker()
        self._generation = defaultdict(int)
        self._held = {}
        self._held_count = 0
        self._positioned = set()
        self._committed = {}
        self._queue = asyncio.Queue()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._busy = asyncio.Lock()
        self._settled = asyncio.Event()
        self._settled.set()
        self._has_topics = asyncio.Event()
        self._joined = False
        self._reset_suspects = set()

    async def _session(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """One consumer's membership: until ``stop``, or until a stall asks for a rejoin (the
        session then ends like a shutdown, and ``run`` starts a new consumer)."""
        self._reset_session_state()
        self._consumer = consumer
        listener_metrics.SUBSCRIBED_TOPICS.set(0)
        self._wanted_changed.set()
        ending = asyncio.Event()
        self._rejoin = ending
        relay = asyncio.ensure_future(self._relay_stop(stop, ending))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._admission_loop())
                group.create_task(self._fetch_loop(consumer, ending))
                group.create_task(self._subscription_loop(consumer, ending))
                group.create_task(self._probe_loop(consumer, ending))
        finally:
            relay.cancel()
        # Every admitted offset is committed by now unless the broker refused; leaving the group
        # (consumer.stop) hands the partitions over.
        await self._commit(consumer)
        for tp in list(self._committed):
            self._drop_lag(tp)
        listener_metrics.SUBSCRIBED_TOPICS.set(0)

    @staticmethod
    async def _relay_stop(stop: asyncio.Event, ending: asyncio.Event) -> None:
        await stop.wait()
        ending.set()

    # ---------------------------------------------------------------------------------------
    # Fetch

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
                    await wait_for_event(self._has_topics, stop, _SETTLE_WAIT_S)
                    continue
                try:
                    batch = await _getmany(
                        consumer,
                        stop,
                        # While records are held, come back soon: admission finishing is the
                        # cue to hand them out.
                        timeout_ms=_HELD_FETCH_TIMEOUT_MS if held else _FETCH_TIMEOUT_MS,
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
        work = _Work()
        limit = self._config.max_message_bytes
        for tp, records in self._held.items():
            work.generations[tp] = self._generation[tp]
            for record in records:
                work.events.append(to_event(record, received_at, limit))
                work.positions.append((tp, record.offset))
            self._tracker.handed_out(tp, [record.offset for record in records])
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
                await _getmany(
                    consumer,
                    stop,
                    timeout_ms=_KEEPALIVE_FETCH_MS,
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
            await wait_for_event(self._settled, stop, _SETTLE_WAIT_S)
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
            await sleep_or_stop(stop, _SETTLE_WAIT_S / 10)
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

    async def _restart_reset_logs(
        self, consumer: AIOKafkaConsumer, committed: Mapping[TopicPartition, int]
    ) -> None:
        """A partition whose log now ends before what was committed has been reset (topic deleted
        and recreated, broker with memory storage restarted without a rebalance): brokers such as
        Tansu then answer fetches at the old position with nothing rather than with
        ``OffsetOutOfRange``, and the new records would wait until the log grew past the old
        position and then be skipped. Such partitions restart at their earliest offset; the
        records there are new ones (offset dedup tells them apart from the old ones).

        The end is the high watermark of the partition's last fetch response (Tansu answers
        ListOffsets with wrong ends for batched records), and it must be seen below the commit
        at two probes in a row, so that one stale answer does not replay a partition."""
        suspects: dict[TopicPartition, int] = {}
        for tp, position in committed.items():
            if tp not in consumer.assignment():
                continue
            end = consumer.highwater(tp)
            if end is not None and end < position:
                suspects[tp] = end
        confirmed = {tp: committed[tp] for tp in suspects if tp in self._reset_suspects}
        self._reset_suspects = set(suspects) - set(confirmed)
        if confirmed:
            log.warning(
                "kafka_log_reset",
                partitions={
                    f"{tp.topic}/{tp.partition}": {"committed": at, "end": suspects[tp]}
                    for tp, at in confirmed.items()
                },
            )
            await self._out_of_range(consumer, OffsetOutOfRangeError(confirmed))

    async def _check_stall(
        self, consumer: AIOKafkaConsumer, assigned: Collection[TopicPartition]
    ) -> bool:
        """Report and end a stall (see ``shared.kafka.stall``); True while stalled."""
        if not self._joined:
            # Joining (or rebalancing) is not a stall: no partitions is expected meanwhile.
            return self._stalled
        backlog: dict[TopicPartition, tuple[int, int]] = {}
        if self._subscribed and not assigned:
            try:
                async with asyncio.timeout(self._config.probe_timeout_s):
                    backlog = await self._group_backlog(consumer)
            except (KafkaError, OSError, TimeoutError) as exc:
                listener_metrics.ERRORS.labels("probe").inc()
                log.warning("kafka_backlog_unavailable", error=admission.describe(exc))
                return self._stalled
        state = self._stall.observe(asyncio.get_running_loop().time(), len(assigned), backlog)
        if state.verdict == "waiting":
            return self._stalled
        if state.verdict == "ok":
            if self._stalled:
                log.info("kafka_stall_ended", unconsumed=state.unconsumed)
                listener_metrics.STALLED.set(0)
                self._stalled = False
            return False
        self._report_stall(state)
        if state.verdict == "rejoin":
            listener_metrics.REJOINS.inc()
            log.warning(
                "kafka_stall_rejoin",
                group=self._kafka.kafka_group_id,
                stalled_s=round(state.stalled_s, 1),
            )
            self._rejoin.set()
        return True

    def _report_stall(self, state: StallState) -> None:
        detail = (
            f"stalled: no partitions assigned for {state.stalled_s:.0f} s while "
            f"{len(self._subscribed)} topics hold {state.unconsumed} unconsumed messages; "
            f"rejoining the group after {self._config.stall_rejoin_s:.0f} s"
        )
        if not self._stalled:
            log.error(
                "kafka_stalled",
                group=self._kafka.kafka_group_id,
                topics=self._subscribed,
                unconsumed=state.unconsumed,
                stalled_s=round(state.stalled_s, 1),
                rejoin_after_s=self._config.stall_rejoin_s,
            )
        self._stalled = True
        listener_metrics.STALLED.set(1)
        self._readiness.set(READINESS_COMPONENT, False, detail)

    async def _group_backlog(
        self, consumer: AIOKafkaConsumer
    ) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition of the subscribed topics: (where the group would read, end offset).

        Without a commit the group would start at the trigger's creation time (or the end)."""
        partitions = [
            TopicPartition(topic, p)
            for topic in self._subscribed
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        backlog: dict[TopicPartition, tuple[int, int]] = {}
        fresh: dict[TopicPartition, int] = {}
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is not None:
                backlog[tp] = (committed, ends[tp])
            elif (created := self._wanted.get(tp.topic)) is not None:
                fresh[tp] = created
        if fresh:
            found = await consumer.offsets_for_times(fresh)
            for tp, created in fresh.items():
                answer = found.get(tp)
                offset = start_offset(
                    None if answer is None else (answer.offset, answer.timestamp), created
                )
                backlog[tp] = (ends[tp] if offset is None else offset, ends[tp])
        return backlog

    def _refuse(self, exc: TopicAuthorizationFailedError) -> None:
        """Leave a topic the broker refuses to serve out for a while: while it stays in the
        subscription every fetch raises, which would stall the other topics too."""
        topic = str(exc.args[0]) if exc.args else ""
        listener_metrics.ERRORS.labels("fetch").inc()
        retry_at = asyncio.get_running_loop().time() + self._config.backoff_max_s
        log.error("kafka_topic_not_authorized", topic=topic, retry_in_s=self._config.backoff_max_s)
        self._readiness.set(READINESS_COMPONENT, False, f"topic {topic!r} is not authorized")
        self._refused[topic] = retry_at
        self._wanted_changed.set()

    # ---------------------------------------------------------------------------------------
    # Admission and commits

    async def _admission_loop(self) -> None:
        while True:
            work = await self._queue.get()
            if work is None:
                return
            try:
                async with self._busy:
                    await self._admit(work)
            finally:
                self._in_flight -= 1
                self._room.set()

    def _live(self, work: _Work) -> _Work:
        """The part of ``work`` whose partitions were not revoked since it was fetched."""
        stale = {tp for tp, gen in work.generations.items() if self._generation[tp] != gen}
        if not stale:
            return work
        live = _Work(generations={tp: g for tp, g in work.generations.items() if tp not in stale})
        dropped = 0
        for event, position in zip(work.events, work.positions, strict=True):
            if position[0] in stale:
                dropped += 1
            else:
                live.events.append(event)
                live.positions.append(position)
        listener_metrics.SKIPPED.labels("revoked").inc(dropped)
        log.info("kafka_revoked_records_dropped", records=dropped, partitions=_names(stale))
        return live

    async def _admit(self, work: _Work) -> None:
        consumer = self._consumer
        backoff = Backoff(self._config.backoff_max_s)
        while True:
            work = self._live(work)
            if not work.events:
                return
            try:
                # A connection that hangs (a half-open TCP connection) must not hold the
                # partitions forever: past the timeout the batch is retried on another one.
                async with asyncio.timeout(self._config.admit_timeout_s):
                    await admission.admit(self._pool, work.events)
            except Exception as exc:
                delay = backoff.next()
                listener_metrics.ERRORS.labels("admit").inc()
                log.error(
                    "kafka_admission_failed",
                    error=admission.describe(exc),
                    records=len(work.events),
                    first=work.events[0].ref,
                    retry_in_s=delay,
                    exc_info=not admission.is_transient(exc),
                )
                await asyncio.sleep(delay)
                continue
            break
        listener_metrics.ADMITTED_BATCH.observe(len(work.events))
        done: dict[TopicPartition, list[int]] = defaultdict(list)
        for tp, offset in work.positions:
            done[tp].append(offset)
        for tp, offsets in done.items():
            if self._generation[tp] == work.generations[tp]:
                self._tracker.admitted(tp, offsets)
        self._batches_admitted += 1
        if self._config.fault_kill_after_admit == self._batches_admitted:
            log.warning("kafka_fault_injection_kill", batches=self._batches_admitted)
            os.kill(os.getpid(), signal.SIGKILL)
        if consumer is not None:
            await self._commit(consumer)

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: Collection[TopicPartition] | None = None
    ) -> bool:
        """Commit every admitted run not committed yet (of ``only``); False when Kafka refused.

        A refused commit stays due and is tried again after the next batch or probe; if the
        partitions move first, their new owner re-reads from the last commit (deduplicated).
        """
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._tracker.committable().items()
            if tp in assigned and (only is None or tp in only)
        }
        if not offsets:
            return True
        try:
            async with asyncio.timeout(self._config.commit_timeout_s):
                await consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            listener_metrics.ERRORS.labels("commit").inc()
            log.warning(
                "kafka_commit_failed",
                error=admission.describe(exc),
                partitions=_names(offsets),
            )
            return False
        self._tracker.mark_committed(offsets)
        self._committed.update(offsets)
        return True

    # ---------------------------------------------------------------------------------------
    # Subscription and rebalances

    async def _subscription_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wanted_changed.clear()
            await self._apply_subscription(consumer)
            retry_s = self._next_refused_retry()
            await wait_for_event(self._wanted_changed, stop, retry_s)

    def _next_refused_retry(self) -> float:
        if not self._refused:
            return 3600.0
        now = asyncio.get_running_loop().time()
        return max(0.05, min(self._refused.values()) - now)

    async def _apply_subscription(self, consumer: AIOKafkaConsumer) -> None:
        now = asyncio.get_running_loop().time()
        self._refused = {t: at for t, at in self._refused.items() if at > now}
        topics = sorted(t for t in self._wanted if t not in self._refused)
        if topics == self._subscribed:
            return
        # aiokafka cannot commit the current assignment once the subscription has changed.
        try:
            async with asyncio.timeout(self._config.revoke_wait_s):
                await self._busy.acquire()
        except TimeoutError:
            log.warning("kafka_subscription_change_admission_pending")
        else:
            try:
                await self._commit(consumer)
            finally:
                self._busy.release()
        log.info("kafka_subscription_changed", topics=topics, previous=self._subscribed)
        if topics:
            # Partitions of the new assignment have no position until on_partitions_assigned.
            self._settled.clear()
            consumer.subscribe(topics, listener=self)
        else:
            # No rebalance callback follows an unsubscribe: forget the partitions here.
            self._forget(consumer.assignment() | set(self._tracker.committable()))
            consumer.unsubscribe()
        self._subscribed = topics
        if topics:
            self._has_topics.set()
        else:
            self._has_topics.clear()
        listener_metrics.SUBSCRIBED_TOPICS.set(len(topics))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is admitted, then drop the revoked partitions' remaining work."""
        self._settled.clear()
        self._joined = False
        if not revoked:
            return
        listener_metrics.REVOCATIONS.inc()
        consumer = self._consumer
        try:
            log.info("kafka_partitions_revoked", partitions=_names(revoked))
            try:
                async with asyncio.timeout(self._config.revoke_wait_s):
                    await self._busy.acquire()
            except TimeoutError:
                log.warning("kafka_revoke_admission_pending", partitions=_names(revoked))
                if consumer is not None:
                    await self._commit(consumer, revoked)
            else:
                try:
                    if consumer is not None:
                        await self._commit(consumer, revoked)
                finally:
                    self._busy.release()
        except Exception:
            log.exception("kafka_revoke_failed", partitions=_names(revoked))
        finally:
            self._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Give every assigned partition its start position (see the module docstring)."""
        consumer = self._consumer
        self._joined = True
        try:
            log.info("kafka_partitions_assigned", partitions=_names(assigned))
            if consumer is not None and assigned:
                await self._position(consumer, assigned)
        except Exception:
            log.exception("kafka_assign_failed", partitions=_names(assigned))
        finally:
            self._settled.set()

    def _forget(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self._generation[tp] += 1
            self._held_count -= len(self._held.pop(tp, ()))
            self._positioned.discard(tp)
            self._drop_lag(tp)
        self._tracker.forget(partitions)

    def _drop_lag(self, tp: TopicPartition) -> None:
        if self._committed.pop(tp, None) is not None:
            try:
                metrics.KAFKA_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def _position(
        self, consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition]
    ) -> set[TopicPartition]:
        """Seek partitions without a committed offset; returns those that could not be placed."""
        try:
            async with asyncio.timeout(self._config.request_timeout_ms / 1000):
                fresh: list[TopicPartition] = []
                for tp in sorted(partitions):
                    committed = await consumer.committed(tp)
                    if committed is None:
                        fresh.append(tp)
                    else:
                        self._committed[tp] = committed
                        self._positioned.add(tp)
                if not fresh:
                    return set()
                # End offsets first: a message produced between the two requests is then found
                # by offsets_for_times instead of being skipped by a later end offset.
                ends = await consumer.end_offsets(fresh)
                created = {tp: self._wanted.get(tp.topic) for tp in fresh}
                queries = {tp: at for tp, at in created.items() if at is not None}
                found = await consumer.offsets_for_times(queries) if queries else {}
        except (KafkaError, TimeoutError) as exc:
            listener_metrics.ERRORS.labels("position").inc()
            log.warning(
                "kafka_position_failed",
                error=admission.describe(exc),
                partitions=_names(partitions),
            )
            return set(partitions) - self._positioned
        placed = {}
        for tp in fresh:
            answer = found.get(tp)
            at = created[tp]
            offset = (
                start_offset(None if answer is None else (answer.offset, answer.timestamp), at)
                if at is not None
                else None
            )
            placed[tp] = ends[tp] if offset is None else offset
            # Positions from assignment callbacks take effect at once with seek(); not
            # seek_to_end(), which races the fetcher's own position reset in aiokafka 0.14.
            consumer.seek(tp, placed[tp])
            self._committed[tp] = placed[tp]
            self._positioned.add(tp)
        log.info(
            "kafka_partitions_positioned",
            positions={f"{tp.topic}/{tp.partition}": offset for tp, offset in placed.items()},
        )
        return set()

    # ---------------------------------------------------------------------------------------
    # Broker probe, lag and late commits

    async def _probe_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self._config.probe_interval_s):
            await self._probe(consumer)
            await self._commit(consumer)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Check the broker answers (for /readyz) and measure the lag of assigned partitions."""
        assigned = sorted(consumer.assignment())
        # Taken before asking for the ends: a log only shrinks below what was committed before.
        committed = dict(self._committed)
        try:
            async with asyncio.timeout(self._config.probe_timeout_s):
                if assigned:
                    ends = await consumer.end_offsets(assigned)
                else:
                    ends = {}
                    await consumer.topics()
        except (KafkaError, OSError, TimeoutError) as exc:
            listener_metrics.ERRORS.labels("probe").inc()
            listener_metrics.BROKER_UP.set(0)
            self._readiness.set(
                READINESS_COMPONENT, False, f"broker unreachable: {type(exc).__name__}"
            )
            log.warning("kafka_broker_unreachable", error=admission.describe(exc))
            return
        listener_metrics.BROKER_UP.set(1)
        await self._restart_reset_logs(consumer, committed)
        if await self._check_stall(consumer, assigned):
            return
        for tp, end in ends.items():
            position = self._committed.get(tp)
            if position is not None:
                metrics.KAFKA_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
        if not self._refused:
            self._readiness.set(
                READINESS_COMPONENT,
                True,
                f"group {self._kafka.kafka_group_id}: {len(self._subscribed)} topics, "
                f"{len(assigned)} partitions assigned",
            )
