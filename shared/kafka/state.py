"""What the Kafka intake member keeps, shared by the modules that make up its class.

``KafkaListener`` (``member.py``) is assembled from one class per concern, each in its own module
and each building on the previous one: ``commits.CommitTracking`` (admission and offset commits),
``rebalance.Rebalancing`` (subscriptions, the ``ConsumerRebalanceListener`` callbacks and start
positions), ``fetch.Fetching`` (the fetch and backpressure loop) and ``probe.Probing`` (broker
probe, lag, reset logs and stalls). This module holds the state they share and small helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.admission import Submit
from shared.kafka.config import ListenerSettings
from shared.kafka.offsets import OffsetTracker
from shared.kafka.stall import StallWatch
from shared.models.events import IncomingEvent
from shared.settings import KafkaSettings

log = structlog.get_logger("sluice.kafka_listener")

READINESS_COMPONENT = "kafka"
"""The readiness component of the default cluster; others are ``kafka:<cluster>``."""
FETCH_TIMEOUT_MS = 100
HELD_FETCH_TIMEOUT_MS = 5
KEEPALIVE_FETCH_MS = 100
SETTLE_WAIT_S = 1.0
HOLD_RECHECK_S = 0.25
"""While partitions are paused for backpressure, how often the counts are read again."""


def utcnow() -> datetime:
    return datetime.now(UTC)


async def getmany_or_stop(
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


def partition_names(partitions: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


class ReadinessSink(Protocol):
    """Where the member reports its readiness (``shared.probes.READINESS`` or a source's)."""

    def set(self, name: str, ok: bool, detail: str = "") -> None: ...


Decode = Callable[[Any, datetime], list[IncomingEvent]]
"""The events of one fetched record (aiokafka's ``ConsumerRecord``) received at a time."""


@dataclass(frozen=True)
class TopicHolds:
    """What backpressure (``shared.backpressure``) asks of the member's topics right now."""

    held: frozenset[str] = frozenset()
    """Topics whose partitions are paused: a workflow they feed is at ``max_waiting``."""
    bounded: frozenset[str] = frozenset()
    """Topics feeding any workflow with ``max_waiting``: their batches go one at a time, so
    each is checked against counts that include every batch before it."""


HoldTopics = Callable[[], Awaitable[TopicHolds]]
"""Read the counts (one query) and say which topics to hold; see ``TopicHolds``."""


@dataclass
class Work:
    """One fetched batch on its way to admission: its records' events, in fetch order."""

    events: list[IncomingEvent] = field(default_factory=list)
    positions: list[tuple[TopicPartition, int]] = field(default_factory=list)
    """Per event, the partition and offset of its record."""
    offsets: dict[TopicPartition, list[int]] = field(default_factory=dict)
    """Every record's offset, also of records without an event."""
    generations: dict[TopicPartition, int] = field(default_factory=dict)


class MemberState:
    """The member's attributes (set in ``KafkaListener.__init__`` and per consumer session)."""

    _cluster: str | None
    _label: str
    _component: str
    _submit: Submit
    _decode: Decode
    _on_assignment: Callable[[Collection[TopicPartition]], None] | None
    _hold_topics: HoldTopics | None
    _holds: TopicHolds
    _holds_checked_at: float
    _kafka: KafkaSettings
    _config: ListenerSettings
    _clock: Callable[[], datetime]
    _readiness: ReadinessSink
    _wanted: dict[str, int | None]
    _wanted_changed: asyncio.Event
    _refused: dict[str, float]
    _batches_admitted: int
    _stall: StallWatch[TopicPartition]
    _stalled: bool
    _rejoin: asyncio.Event
    _consumer: AIOKafkaConsumer | None
    _subscribed: list[str]
    _tracker: OffsetTracker[TopicPartition]
    _generation: defaultdict[TopicPartition, int]
    _held: dict[TopicPartition, list[Any]]
    _held_count: int
    _positioned: set[TopicPartition]
    _committed: dict[TopicPartition, int]
    _queue: asyncio.Queue[Work | None]
    _in_flight: int
    _room: asyncio.Event
    _busy: asyncio.Lock
    _settled: asyncio.Event
    _has_topics: asyncio.Event
    _joined: bool
    _unjoined_since: float | None
    _reset_suspects: set[TopicPartition]
