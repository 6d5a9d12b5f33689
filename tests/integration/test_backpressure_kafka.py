"""Backpressure on the Kafka listener (policy.max_waiting): a full workflow pauses its topic's
partitions, the consumer lag grows instead of the queue, and every record runs exactly once.

`SLUICE_BACKPRESSURE_MESSAGES` sets the number of records (default 1,000; the issue's scenario
is 5,000).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.embedded.kafka import EmbeddedKafka
from shared.probes import READINESS
from tests.factories import shell_node, workflow
from tests.integration.kafka_support import TopicFactory
from tests.support.executor import running_executor, wait_for
from tests.support.kafka_listener import (
    bind,
    committed,
    eventually,
    running_listener,
    sample,
    send,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"
MAX_WAITING = 50
BATCH = 20
MESSAGES = int(os.environ.get("SLUICE_BACKPRESSURE_MESSAGES", "1000"))
PARTITIONS = 2


async def waiting(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM instances WHERE state = 'waiting'"))


async def produce(broker: EmbeddedKafka, topic: str, count: int) -> None:
    """`count` keyed records spread over the partitions. One request per record: the embedded
    broker reports end offsets per produced batch, and the lag check reads them."""
    for partition in range(PARTITIONS):
        seqs = range(partition, count, PARTITIONS)
        await send(
            broker,
            topic,
            [json.dumps({"seq": i}).encode() for i in seqs],
            keys=[f"k{i}".encode() for i in seqs],
            partition=partition,
        )


async def committed_total(broker: EmbeddedKafka, group: str, topic: str) -> int:
    total = 0
    for partition in range(PARTITIONS):
        total += await committed(broker, group, topic, partition) or 0
    return total


@pytest.mark.timeout(600)
async def test_a_full_workflow_pauses_its_partitions_and_nothing_is_lost_or_doubled(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics(partitions=PARTITIONS)
    spec = workflow(
        "slow",
        trigger="bp",
        nodes=[shell_node("work", code="sleep 0.01")],
        policy={"max_waiting": MAX_WAITING, "max_parallel_instances": 4},
    )
    await bind(pool, topic.name, trigger="bp", workflow_spec=spec)
    await produce(kafka_broker, topic.name, MESSAGES)
    peak = 0
    sampling = True

    async def sample_waiting() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await waiting(pool))
            await asyncio.sleep(0.02)

    async with running_listener(
        db_url, kafka_broker, settings={"kafka_max_batch": BATCH}
    ) as listener:
        sampler = asyncio.create_task(sample_waiting())
        try:
            # No executor yet: the workflow cannot drain, so intake stops at the bound.
            await eventually(lambda: _at_least(waiting(pool), MAX_WAITING), timeout_s=60)
            await eventually(
                lambda: _true(
                    sample(
                        "sluice_backpressure_paused",
                        source="kafka-listener",
                        workspace_id="1",
                        trigger="bp",
                    )
                    == 1
                )
            )
            detail = READINESS.snapshot()["backpressure"]
            assert detail.ok
            assert "trigger 'bp'" in detail.detail and "max_waiting 50" in detail.detail
            # The records wait in Kafka instead: uncommitted, reported as consumer lag.
            await eventually(
                lambda: _true(
                    sum(
                        sample(
                            "sluice_kafka_consumer_lag",
                            topic=topic.name,
                            partition=str(p),
                            cluster="default",
                        )
                        for p in range(PARTITIONS)
                    )
                    >= MESSAGES - MAX_WAITING - BATCH
                )
            )
            held = await committed_total(kafka_broker, listener.group, topic.name)
            assert held <= MAX_WAITING + BATCH
            events = int(await pool.fetchval("SELECT count(*) FROM events"))
            assert events <= MAX_WAITING + BATCH
            # Now the workflow drains (slowly): intake resumes below 80 % and pauses again.
            async with running_executor(db_url, concurrency=4):
                await wait_for(
                    pool,
                    "SELECT count(*) = $1 FROM instances WHERE state = 'succeeded'",
                    MESSAGES,
                    timeout_s=500,
                )
            await eventually(
                lambda: _at_least(
                    committed_total(kafka_broker, listener.group, topic.name), MESSAGES
                )
            )
        finally:
            sampling = False
            await sampler
    assert peak >= MAX_WAITING
    assert peak <= MAX_WAITING + BATCH, peak
    keys = Counter(
        r["key"] for r in await pool.fetch("SELECT trigger_message->>'key' AS key FROM instances")
    )
    assert len(keys) == MESSAGES
    assert max(keys.values()) == 1
    outcomes = Counter(r["outcome"] for r in await pool.fetch("SELECT outcome FROM event_outcomes"))
    assert outcomes == {"admitted": MESSAGES}
    print(  # noqa: T201 - the scenario's summary line is part of its result
        f"backpressure: messages={MESSAGES} max_waiting={MAX_WAITING} batch={BATCH} "
        f"peak_waiting={peak} instances={sum(keys.values())} lag_while_paused>="
        f"{MESSAGES - held}"
    )


async def _at_least(value: Any, bound: int) -> bool | None:
    return True if await value >= bound else None


async def _true(value: bool) -> bool | None:
    return True if value else None
