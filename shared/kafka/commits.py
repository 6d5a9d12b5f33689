"""The Kafka intake member, part 1: admission of fetched batches and offset commits."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    KafkaError,
)

from shared import metrics
from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.retry import Backoff
from shared.kafka.state import (
    MemberState,
    Work,
    log,
    partition_names,
)


class CommitTracking(MemberState):
    """Admit batches, then commit each partition up to its longest admitted run."""

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

    def _live(self, work: Work) -> Work:
        """The part of ``work`` whose partitions were not revoked since it was fetched."""
        stale = {tp for tp, gen in work.generations.items() if self._generation[tp] != gen}
        if not stale:
            return work
        live = Work(
            offsets={tp: o for tp, o in work.offsets.items() if tp not in stale},
            generations={tp: g for tp, g in work.generations.items() if tp not in stale},
        )
        dropped = 0
        for event, position in zip(work.events, work.positions, strict=True):
            if position[0] in stale:
                dropped += 1
            else:
                live.events.append(event)
                live.positions.append(position)
        listener_metrics.SKIPPED.labels("revoked").inc(dropped)
        log.info(
            "kafka_revoked_records_dropped", records=dropped, partitions=partition_names(stale)
        )
        return live

    async def _admit(self, work: Work) -> None:
        consumer = self._consumer
        backoff = Backoff(self._config.backoff_max_s)
        while True:
            work = self._live(work)
            if not work.offsets:
                return
            if not work.events:
                break  # records without events (an empty notification) are done as they are
            try:
                # A connection that hangs (a half-open TCP connection) must not hold the
                # partitions forever: past the timeout the batch is retried on another one.
                async with asyncio.timeout(self._config.admit_timeout_s):
                    await admission.admit(self._submit, work.events)
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
        for tp, offsets in work.offsets.items():
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
                partitions=partition_names(offsets),
            )
            return False
        self._tracker.mark_committed(offsets)
        self._committed.update(offsets)
        return True

    # ---------------------------------------------------------------------------------------
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
                metrics.KAFKA_LAG.remove(tp.topic, str(tp.partition), self._label)
            except KeyError:
                pass
