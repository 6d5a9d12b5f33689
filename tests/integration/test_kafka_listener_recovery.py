"""The listener recovers by itself from database and broker outages, and says so meanwhile.

Database outages are made with a TCP proxy between the listener and PostgreSQL (every connection
dropped, new ones refused); broker outages by stopping a broker of the test's own and starting a
new one on the same port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from services.dev.servers.process import free_port
from shared.probes import READINESS
from tests.integration.kafka_support import TopicFactory
from tests.support.kafka_listener import (
    Pool,
    TcpProxy,
    bind,
    database_target,
    eventually,
    instance_count,
    outcomes_by_ref,
    running_listener,
    sample,
    send,
    via_proxy,
    wait_committed,
    wait_events,
)

LAG = "sluice_kafka_consumer_lag"
ERRORS = "sluice_kafka_listener_errors_total"
REVOCATIONS = "sluice_kafka_listener_revocations_total"


async def test_a_database_outage_delays_admission_and_commits_but_loses_nothing(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name)
    async with TcpProxy(database_target(db_url)) as proxy:
        proxy.cut()  # down from the start: the listener waits for it
        refused = sample(ERRORS, stage="database")
        async with running_listener(via_proxy(db_url, proxy), kafka_broker) as listener:

            async def waiting() -> bool | None:
                return True if sample(ERRORS, stage="database") > refused else None

            await eventually(waiting)
            failures = sample(ERRORS, stage="admit")
            proxy.restore()
            [first] = await send(kafka_broker, topic.name, [b'{"n": 1}'])
            await wait_committed(kafka_broker, listener.group, topic.name, first + 1)

            proxy.cut()
            [second] = await send(kafka_broker, topic.name, [b'{"n": 2}'])
            lag = {"topic": topic.name, "partition": "0"}

            async def stuck() -> bool | None:
                failing = sample(ERRORS, stage="admit") > failures
                return True if failing and sample(LAG, **lag, cluster="default") == 1 else None

            # Admission fails and is retried; the record is neither committed nor skipped.
            await eventually(stuck)
            proxy.restore()
            await wait_committed(kafka_broker, listener.group, topic.name, second + 1)

            async def caught_up() -> bool | None:
                return True if sample(LAG, **lag, cluster="default") == 0 else None

            await eventually(caught_up)
    found = await outcomes_by_ref(pool)
    assert [found[f"{topic.name}/0/{o}"] for o in (first, second)] == [[("admitted", None)]] * 2
    assert await instance_count(pool) == 2


async def test_a_long_outage_keeps_the_group_membership_while_admission_waits(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    """Admission blocked for several times `max_poll_interval_ms` with fetching held back (one
    batch of one record in flight, one more held, more waiting in Kafka): the member stays in
    its group (no rebalance), and afterwards every record is admitted once."""
    topic = await kafka_topics()
    await bind(pool, topic.name)
    async with (
        TcpProxy(database_target(db_url)) as proxy,
        running_listener(
            via_proxy(db_url, proxy),
            kafka_broker,
            settings={"kafka_max_batch": 1},
            in_flight_batches=1,
            max_poll_interval_ms=1500,
        ) as listener,
    ):
        [first] = await send(kafka_broker, topic.name, [b'{"n": 0}'])
        await wait_committed(kafka_broker, listener.group, topic.name, first + 1)
        revocations = sample(REVOCATIONS)
        failures = sample(ERRORS, stage="admit")
        proxy.cut()
        offsets = await send(kafka_broker, topic.name, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])

        async def outlasted() -> bool | None:
            # Retries back off up to 1 s: four failures take longer than two poll intervals.
            return True if sample(ERRORS, stage="admit") >= failures + 4 else None

        await eventually(outlasted)
        proxy.restore()
        await wait_committed(kafka_broker, listener.group, topic.name, offsets[-1] + 1)
        assert sample(REVOCATIONS) == revocations
    assert await instance_count(pool) == 4
    kinds = {ref: [kind for kind, _ in seen] for ref, seen in (await outcomes_by_ref(pool)).items()}
    assert set(map(tuple, kinds.values())) == {("admitted",)}


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    """A broker for one test only, on a fixed port so that a restart keeps its address."""
    async with EmbeddedKafka(
        free_port(), backend="tansu", log_path=tmp_path / "broker.log", stop_timeout_s=0.5
    ) as broker:
        yield broker


async def test_a_broker_outage_is_reported_and_survived(
    pool: Pool, db_url: str, own_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    if own_broker.backend != "tansu":
        pytest.skip("restarting on the same port needs Tansu")
    name = "outage"
    port = int(own_broker.bootstrap.rpartition(":")[2])
    await create_topics(own_broker.bootstrap, [name])
    await bind(pool, name, dedup="${workflow.triggerMessage.value.n}")

    def kafka_ready() -> bool | None:
        component = READINESS.snapshot().get("kafka")
        return None if component is None else component.ok

    async with running_listener(db_url, own_broker) as listener:
        await send(own_broker, name, [b'{"n": 1}'])
        await wait_events(pool, 1)

        await asyncio.to_thread(own_broker.stop)

        async def reported_down() -> bool | None:
            return True if kafka_ready() is False else None

        await eventually(reported_down)
        # The broker comes back empty (memory storage): no topic, no committed offsets.
        restarted = EmbeddedKafka(port, backend="tansu", log_path=tmp_path / "restarted.log")
        async with restarted:
            await create_topics(restarted.bootstrap, [name])
            await send(restarted, name, [b'{"n": 2}'])
            await wait_events(pool, 2)
            await wait_committed(restarted, listener.group, name, 1)

            async def reported_up() -> bool | None:
                return True if kafka_ready() else None

            await eventually(reported_up)
            # Stopped while its broker runs: a broker waits for connected clients to leave.
            await listener.shutdown()
    values = [
        json.loads(r["value"])["n"]
        for r in await pool.fetch(
            "SELECT trigger_message->>'value' AS value FROM instances ORDER BY id"
        )
    ]
    assert values == [1, 2]
