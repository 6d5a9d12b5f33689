"""The Kafka intake member, part 4: broker probe, lag, reset logs and stalls."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    KafkaError,
    OffsetOutOfRangeError,
)

from shared import metrics
from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.fetch import Fetching
from shared.kafka.offsets import start_offset
from shared.kafka.retry import sleep_or_stop
from shared.kafka.stall import StallState
from shared.kafka.state import (
    log,
)


class Probing(Fetching):
    """Probe the broker every ``probe_interval_s``: readiness, lag, late commits, stalls."""

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
        now = asyncio.get_running_loop().time()
        if not self._joined:
            # Joining (or rebalancing) has no partitions yet; only one that lasts is a stall.
            if not self._subscribed or self._unjoined_since is None:
                return self._stalled
            return self._act_on(self._stall.joining(now, self._unjoined_since))
        backlog: dict[TopicPartition, tuple[int, int]] = {}
        if self._subscribed and not assigned:
            try:
                async with asyncio.timeout(self._config.probe_timeout_s):
                    backlog = await self._group_backlog(consumer)
            except (KafkaError, OSError, TimeoutError) as exc:
                listener_metrics.ERRORS.labels("probe").inc()
                log.warning("kafka_backlog_unavailable", error=admission.describe(exc))
                return self._stalled
        return self._act_on(self._stall.observe(now, len(assigned), backlog))

    def _act_on(self, state: StallState) -> bool:
        if state.verdict == "waiting":
            return self._stalled
        if state.verdict == "ok":
            if self._stalled:
                log.info("kafka_stall_ended", unconsumed=state.unconsumed)
                listener_metrics.STALLED.labels(self._label).set(0)
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
        rejoin = f"rejoining the group after {self._config.stall_rejoin_s:.0f} s"
        detail = (
            f"stalled: joining the group has not completed for {state.stalled_s:.0f} s; {rejoin}"
            if state.joining
            else f"stalled: no partitions assigned for {state.stalled_s:.0f} s while "
            f"{len(self._subscribed)} topics hold {state.unconsumed} unconsumed messages; {rejoin}"
        )
        if not self._stalled:
            log.error(
                "kafka_stalled",
                group=self._kafka.kafka_group_id,
                topics=self._subscribed,
                unconsumed=state.unconsumed,
                joining=state.joining,
                stalled_s=round(state.stalled_s, 1),
                rejoin_after_s=self._config.stall_rejoin_s,
            )
        self._stalled = True
        listener_metrics.STALLED.labels(self._label).set(1)
        self._readiness.set(self._component, False, detail)

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
            listener_metrics.BROKER_UP.labels(self._label).set(0)
            self._readiness.set(self._component, False, f"broker unreachable: {type(exc).__name__}")
            log.warning("kafka_broker_unreachable", error=admission.describe(exc))
            return
        listener_metrics.BROKER_UP.labels(self._label).set(1)
        await self._restart_reset_logs(consumer, committed)
        if await self._check_stall(consumer, assigned):
            return
        for tp, end in ends.items():
            position = self._committed.get(tp)
            if position is not None:
                metrics.KAFKA_LAG.labels(tp.topic, str(tp.partition), self._label).set(
                    max(0, end - position)
                )
        if not self._refused:
            self._readiness.set(
                self._component,
                True,
                f"group {self._kafka.kafka_group_id}: {len(self._subscribed)} topics, "
                f"{len(assigned)} partitions assigned",
            )
