"""Kafka intake under chaos: the kafka-listener killed with SIGKILL while messages flow, its broker
frozen for 20 s, and a consumer group whose members join and leave during intake.

Real `sluice run kafka-listener` processes, a real Kafka-protocol broker and PostgreSQL; every
message carries a unique id, and each scenario counts the instances per id.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from services.dev.servers.process import free_port
from tests.integration.kafka_support import TopicFactory, group_id, producer
from tests.support.chaos import (
    Pool,
    alive,
    kafka_ids,
    kill_hard,
    message_ids,
    poll,
    settled_ids,
    summary,
    tally,
)
from tests.support.kafka_listener import bind, listener_process

SETTLE_S = 90.0


async def produce(
    broker: EmbeddedKafka, topic: str, ids: list[str], *, per_s: float, partitions: int
) -> None:
    """Send one record per id, spread over the partitions, at about `per_s` records a second.

    The pace spreads the records over the scenario so the faults land while they arrive.
    """
    batch = max(1, int(per_s / 20))
    async with producer(broker, linger_ms=5) as client:
        for start in range(0, len(ids), batch):
            sends = [
                await client.send(
                    topic,
                    json.dumps({"id": m, "n": start + i}).encode(),
                    partition=(start + i) % partitions,
                )
                for i, m in enumerate(ids[start : start + batch])
            ]
            await asyncio.gather(*sends)
            await asyncio.sleep(batch / per_s)


async def admitted_count(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM instances"))


async def until_admitted(pool: Pool, at_least: int, timeout_s: float = 60) -> int:
    async def reached() -> int | None:
        n = await admitted_count(pool)
        return n if n >= at_least else None

    return await poll(reached, timeout_s=timeout_s, what=f"{at_least} instances")


@pytest.mark.timeout(240)
async def test_kill_9_the_listener_three_times_while_2000_messages_arrive(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topics(partitions=3)
    await bind(pool, topic.name)
    ids = message_ids("kill9", 2000)
    group = group_id()
    log = tmp_path / "listener.log"
    recover: list[float] = []
    async with AsyncExitStack() as stack:
        proc = await stack.enter_async_context(listener_process(db_url, kafka_broker, group, log))
        sending = asyncio.create_task(
            produce(kafka_broker, topic.name, ids, per_s=150, partitions=topic.partitions)
        )
        for threshold in (300, 800, 1300):
            before = await until_admitted(pool, threshold)
            kill_hard(proc.pid)
            killed_at = time.monotonic()
            await proc.wait()
            proc = await stack.enter_async_context(
                listener_process(db_url, kafka_broker, group, log)
            )
            await until_admitted(pool, min(before + 1, len(ids)))
            recover.append(time.monotonic() - killed_at)
        await sending
        found = await settled_ids(lambda: kafka_ids(pool), ids, timeout_s=SETTLE_S)
        assert alive(proc.pid)
    result = tally(ids, found)
    summary("kill9-listener-x3", result, max(recover))
    assert result.lost == [] and result.duplicated == {}


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    """A broker of this scenario only: freezing it must not stall the rest of the suite."""
    async with EmbeddedKafka(
        free_port(), log_path=tmp_path / "broker.log", stop_timeout_s=0.5
    ) as broker:
        yield broker


@pytest.mark.timeout(240)
async def test_the_broker_frozen_for_20_seconds(
    pool: Pool, db_url: str, own_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    if own_broker.pid is None:
        pytest.skip("the broker runs inside this process (librdkafka mock); it cannot be frozen")
    name = "frozen"
    await create_topics(own_broker.bootstrap, [name], 2)
    await bind(pool, name)
    ids = message_ids("frozen", 600)
    group = group_id()
    async with listener_process(db_url, own_broker, group, tmp_path / "listener.log") as proc:
        await produce(own_broker, name, ids[:300], per_s=300, partitions=2)
        await until_admitted(pool, 100)
        # SIGSTOP: every connection stays open and nothing answers, as with a hung broker or a
        # network partition; the records already written stay on it.
        pid = own_broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(20)  # the outage itself, not a wait for a condition
            assert alive(proc.pid), "the listener died while the broker was frozen"
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        before = await admitted_count(pool)
        await produce(own_broker, name, ids[300:], per_s=300, partitions=2)
        await until_admitted(pool, min(before + 1, len(ids)))
        recover_s = time.monotonic() - resumed
        found = await settled_ids(lambda: kafka_ids(pool), ids, timeout_s=SETTLE_S)
        assert proc.returncode is None, "the listener exited instead of waiting for the broker"
    result = tally(ids, found)
    summary("kafka-broker-frozen-20s", result, recover_s)
    assert result.lost == [] and result.duplicated == {}


@pytest.mark.timeout(240)
async def test_two_listeners_in_one_group_one_joining_one_leaving(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topics(partitions=4)
    await bind(pool, topic.name)
    ids = message_ids("rebalance", 1500)
    group = group_id()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            listener_process(db_url, kafka_broker, group, tmp_path / "first.log")
        )
        sending = asyncio.create_task(
            produce(kafka_broker, topic.name, ids, per_s=150, partitions=topic.partitions)
        )
        await until_admitted(pool, 300)
        second = await stack.enter_async_context(
            listener_process(db_url, kafka_broker, group, tmp_path / "second.log")
        )
        await until_admitted(pool, 800)
        # The first member leaves as a rolling update makes it: SIGTERM, drain, leave the group.
        first.send_signal(signal.SIGTERM)
        left_at = time.monotonic()
        assert await asyncio.wait_for(first.wait(), 30) == 0
        before = await admitted_count(pool)
        await until_admitted(pool, min(before + 1, len(ids)))
        recover_s = time.monotonic() - left_at
        await sending
        found = await settled_ids(lambda: kafka_ids(pool), ids, timeout_s=SETTLE_S)
        assert second.returncode is None
    result = tally(ids, found)
    summary("two-listeners-join-leave", result, recover_s)
    assert result.lost == [] and result.duplicated == {}
