"""A listener left with no partitions while its topic holds unconsumed messages says so and rejoins.

The stall is made real: another member of the group is its leader and assigns every partition to
itself (a custom assignor under the listener's protocol name), then consumes and commits nothing,
the way a group settles on a member that no longer works. The listener must report it in
`/readyz`, a metric and its log, leave and rejoin after `stall_rejoin_s`, and once the hog is gone
admit the waiting messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from services.dev.servers.kafka import EmbeddedKafka
from shared.probes import READINESS
from tests.integration.kafka_support import TopicFactory, group_id, group_timing
from tests.support.kafka_listener import (
    Pool,
    bind,
    eventually,
    instance_count,
    running_listener,
    sample,
    send,
)

_HOG = b"hog"


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class _HogAssignor(RoundRobinPartitionAssignor):  # type: ignore[misc]
    """Round-robin by name (so the listener can join), but its leader takes every partition."""

    @classmethod
    def metadata(cls, topics: set[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), _HOG)

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        everything = [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, everything if meta.user_data == _HOG else [], b""
            )
            for member, meta in members.items()
        }


async def start_hog(broker: EmbeddedKafka, group: str, topic: str) -> AIOKafkaConsumer:
    """A group member holding every partition of `topic`, fetching and committing nothing."""
    client = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=(_HogAssignor,),
        **group_timing(broker.backend),
    )
    await client.start()
    try:
        client.subscribe([topic])
        async with asyncio.timeout(20):
            while not client.assignment():
                # getmany drives the join; the topic is empty, so nothing is read.
                await client.getmany(timeout_ms=50)
        client.pause(*client.assignment())
    except BaseException:
        await client.stop()
        raise
    return client


def kafka_detail() -> str:
    component = READINESS.snapshot().get("kafka")
    return "" if component is None or component.ok else component.detail


async def reported_stall() -> str:
    """The stall report about the backlog (a join slower than the tiny test threshold may be
    reported first, as a join that has not completed)."""

    async def reported() -> str | None:
        return kafka_detail() if "no partitions assigned" in kafka_detail() else None

    return await eventually(reported)


async def test_a_listener_without_partitions_beside_a_backlog_reports_it(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name)
    group = group_id()
    hogging = await start_hog(kafka_broker, group, topic.name)
    try:
        async with running_listener(
            db_url, kafka_broker, group=group, stall_report_s=1.0, stall_rejoin_s=600.0
        ):
            await send(kafka_broker, topic.name, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
            detail = await reported_stall()
            assert "no partitions assigned" in detail and "3 unconsumed messages" in detail
            assert sample("sluice_kafka_listener_stalled", cluster="default") == 1
            assert await instance_count(pool) == 0

            # The hog leaves: the listener gets the partition and admits what waited.
            await hogging.stop()

            async def admitted() -> bool | None:
                return True if await instance_count(pool) == 3 else None

            await eventually(admitted)

            async def recovered() -> bool | None:
                ok = (
                    sample("sluice_kafka_listener_stalled", cluster="default") == 0
                    and not kafka_detail()
                )
                return True if ok else None

            await eventually(recovered)
    finally:
        await hogging.stop()


async def test_a_stalled_listener_leaves_and_joins_its_group_again(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name)
    group = group_id()
    rejoins = sample("sluice_kafka_listener_rejoins_total")
    hogging = await start_hog(kafka_broker, group, topic.name)
    try:
        async with running_listener(
            db_url, kafka_broker, group=group, stall_report_s=1.0, stall_rejoin_s=2.0
        ):
            await send(kafka_broker, topic.name, [b'{"n": 1}'])
            await reported_stall()

            async def rejoined() -> bool | None:
                return True if sample("sluice_kafka_listener_rejoins_total") > rejoins else None

            await eventually(rejoined)
    finally:
        await hogging.stop()
