"""Kafka fixtures and helpers for integration tests: a real broker per session, new topics per test.

tests/conftest.py registers this module as a plugin: a test asks for `kafka_broker` or
`kafka_topics` by name, without importing them.

``SLUICE_TEST_KAFKA_BACKEND`` (``auto`` | ``tansu`` | ``mock``) chooses the session broker; ``auto``
means Tansu when its binary is installed, else librdkafka's mock cluster.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import NoOffsetForPartitionError

from services.dev.servers.kafka import Backend, BackendChoice, EmbeddedKafka, create_topics

KAFKA_BACKEND_ENV = "SLUICE_TEST_KAFKA_BACKEND"
WAIT_S = 20.0
"""Upper bound for any wait on the broker; a healthy broker answers in well under a second."""


@dataclass(frozen=True)
class Topic:
    """A topic created for one test; ``partitions`` is what the broker actually made."""

    name: str
    partitions: int

    @property
    def tps(self) -> set[TopicPartition]:
        """All partitions of the topic."""
        return {TopicPartition(self.name, p) for p in range(self.partitions)}


TopicFactory = Callable[..., Awaitable[Topic]]


def backend_from_env() -> BackendChoice:
    """The broker backend chosen by ``SLUICE_TEST_KAFKA_BACKEND`` (default ``auto``)."""
    value = os.environ.get(KAFKA_BACKEND_ENV, "auto")
    if value not in ("auto", "tansu", "mock"):
        raise pytest.UsageError(f"{KAFKA_BACKEND_ENV} must be auto, tansu or mock, not {value!r}")
    return cast(BackendChoice, value)


@pytest.fixture(scope="session")
async def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedKafka]:
    """The session's embedded broker; its log is ``<pytest tmp>/kafka*/broker.log``."""
    log_path = tmp_path_factory.mktemp("kafka") / "broker.log"
    async with EmbeddedKafka(backend=backend_from_env(), log_path=log_path) as broker:
        yield broker


@pytest.fixture
def kafka_topics(kafka_broker: EmbeddedKafka) -> TopicFactory:
    """``await kafka_topics(partitions=1)`` creates a uniquely named topic on the session broker."""
    return topic_factory(kafka_broker)


def topic_factory(broker: EmbeddedKafka) -> TopicFactory:
    """A function creating uniquely named topics on ``broker``."""

    async def make(partitions: int = 1, prefix: str = "t") -> Topic:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        counts = await create_topics(broker.bootstrap, [name], partitions)
        return Topic(name, counts[name])

    return make


def group_id() -> str:
    """A consumer group id no other test uses."""
    return f"g-{uuid.uuid4().hex[:12]}"


def group_timing(backend: Backend) -> dict[str, int]:
    """Consumer-group timings that keep tests fast on each backend.

    Tansu holds the first join of a group for max(1 s, session_timeout_ms / 2); librdkafka's mock
    cluster drops clients asking for a session timeout under 6 s and holds a group's first join for
    3 s (its group.initial.rebalance.delay.ms).
    """
    session_timeout_ms = 2000 if backend == "tansu" else 6000
    return {"session_timeout_ms": session_timeout_ms, "heartbeat_interval_ms": 100}


@asynccontextmanager
async def producer(broker: EmbeddedKafka, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer; neither embedded broker supports idempotent producers."""
    client = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, **options
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@asynccontextmanager
async def consumer(
    broker: EmbeddedKafka,
    topics: Sequence[str] = (),
    *,
    group: str | None = None,
    listener: ConsumerRebalanceListener | None = None,
    **options: Any,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer as sluice's listener configures it: manual commits, short fetch waits.

    With ``topics`` it subscribes (as a member of ``group``) before returning.
    """
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 5,
        **group_timing(broker.backend),
        **options,
    }
    client = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, **settings)
    await client.start()
    try:
        if topics:
            client.subscribe(list(topics), listener=listener)
        yield client
    finally:
        await client.stop()


async def consume(client: AIOKafkaConsumer, count: int, timeout_s: float = WAIT_S) -> list[Any]:
    """Read exactly ``count`` records with ``getmany`` (fails if more or fewer arrive in time)."""
    records: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while len(records) < count:
            batch = await client.getmany(timeout_ms=100)
            for partition_records in batch.values():
                records.extend(partition_records)
    assert len(records) == count, f"expected {count} records, got {len(records)}"
    return records


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class RecordingListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance listener that keeps the current assignment and every callback, in order.

    aiokafka reports a revocation of nothing before a member's first assignment; it is not
    recorded. ``before_revoke`` runs at the start of a (non-empty) ``on_partitions_revoked``, where
    sluice commits what is done before the partitions move to another member.
    """

    def __init__(
        self, before_revoke: Callable[[set[TopicPartition]], Awaitable[None]] | None = None
    ) -> None:
        self.assigned: set[TopicPartition] = set()
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []
        self._before_revoke = before_revoke
        self._changed = asyncio.Condition()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        if self._before_revoke is not None:
            await self._before_revoke(set(revoked))
        async with self._changed:
            self.calls.append(("revoked", frozenset(revoked)))
            self.assigned -= set(revoked)
            self._changed.notify_all()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._changed:
            self.calls.append(("assigned", frozenset(assigned)))
            self.assigned = set(assigned)
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[RecordingListener], bool], timeout_s: float = WAIT_S
    ) -> None:
        """Wait until ``predicate(self)`` holds after some callback (or already holds)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self))


class Collector:
    """Keeps calling ``getmany`` in a task (as a running listener does) and keeps the records.

    With ``settled``, a ``NoOffsetForPartitionError`` (``auto_offset_reset="none"`` and a partition
    whose start position the rebalance listener has not chosen yet) waits for that event instead
    of failing.
    """

    def __init__(self, client: AIOKafkaConsumer, settled: asyncio.Event | None = None) -> None:
        self.client = client
        self.records: list[Any] = []
        self.error: BaseException | None = None
        self.unpositioned = 0
        """How many getmany calls raised NoOffsetForPartitionError."""
        self._settled = settled
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        """Fetch until cancelled; a fetch error ends the run and is raised by ``wait_for``."""
        try:
            while True:
                try:
                    batch = await self.client.getmany(timeout_ms=50)
                except NoOffsetForPartitionError:
                    if self._settled is None:
                        raise
                    async with self._changed:
                        self.unpositioned += 1
                        self._changed.notify_all()
                    await self._settled.wait()
                    continue
                if batch:
                    async with self._changed:
                        for partition_records in batch.values():
                            self.records.extend(partition_records)
                        self._changed.notify_all()
        except Exception as exc:
            async with self._changed:
                self.error = exc
                self._changed.notify_all()
            raise

    async def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout_s: float = WAIT_S
    ) -> None:
        """Wait until ``predicate(records)`` holds."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.error is not None or predicate(self.records))
        if self.error is not None:
            raise AssertionError("getmany failed") from self.error


@asynccontextmanager
async def collecting(
    client: AIOKafkaConsumer, settled: asyncio.Event | None = None
) -> AsyncIterator[Collector]:
    """Run a ``Collector`` on ``client`` for the duration of the block."""
    collector = Collector(client, settled)
    task = asyncio.create_task(collector.run())
    try:
        yield collector
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
