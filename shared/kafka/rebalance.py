"""The Kafka intake member, part 2: subscriptions, rebalance callbacks and start positions."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    KafkaError,
)

from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.commits import CommitTracking
from shared.kafka.offsets import start_offset
from shared.kafka.retry import wait_for_event
from shared.kafka.state import (
    log,
    partition_names,
)


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class Rebalancing(CommitTracking, ConsumerRebalanceListener):  # type: ignore[misc]
    """Follow the wanted topics; commit and forget revoked partitions, position assigned ones."""

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
        listener_metrics.SUBSCRIBED_TOPICS.labels(self._label).set(len(topics))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is admitted, then drop the revoked partitions' remaining work."""
        self._settled.clear()
        self._joined = False
        self._unjoined_since = asyncio.get_running_loop().time()
        if not revoked:
            return
        listener_metrics.REVOCATIONS.inc()
        consumer = self._consumer
        try:
            log.info("kafka_partitions_revoked", partitions=partition_names(revoked))
            try:
                async with asyncio.timeout(self._config.revoke_wait_s):
                    await self._busy.acquire()
            except TimeoutError:
                log.warning("kafka_revoke_admission_pending", partitions=partition_names(revoked))
                if consumer is not None:
                    await self._commit(consumer, revoked)
            else:
                try:
                    if consumer is not None:
                        await self._commit(consumer, revoked)
                finally:
                    self._busy.release()
        except Exception:
            log.exception("kafka_revoke_failed", partitions=partition_names(revoked))
        finally:
            self._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Give every assigned partition its start position (see the module docstring)."""
        consumer = self._consumer
        self._joined = True
        self._unjoined_since = None
        try:
            log.info("kafka_partitions_assigned", partitions=partition_names(assigned))
            if consumer is not None and assigned:
                await self._position(consumer, assigned)
        except Exception:
            log.exception("kafka_assign_failed", partitions=partition_names(assigned))
        finally:
            self._settled.set()
            if self._on_assignment is not None:
                self._on_assignment(assigned)

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
                partitions=partition_names(partitions),
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
