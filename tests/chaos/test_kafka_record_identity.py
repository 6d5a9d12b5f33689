"""Chaos: offsets are reused under a running `sluice run kafka-listener`, and no message is lost.

A topic deleted and recreated, and a broker with memory storage restarted, both start their offsets
at 0 again. Offset dedup must take the new records for new events (the record's identity, not its
position), and the listener must find its way to them although its position and committed offsets
now point at a log that no longer exists. Every message carries a unique id; each scenario counts
instances per id (0 = lost, >1 = duplicated) and prints one summary line.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from services.dev.servers.process import free_port
from tests.integration.kafka_support import group_id
from tests.support.chaos import SUMMARIES
from tests.support.kafka_listener import Pool, bind, eventually, listener_process, send

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

TOPIC = "identity"
PER_PHASE = 200
RECOVER_WAIT_S = 60.0


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    """A broker for this test only, on a fixed port so that a restart keeps its address."""
    async with EmbeddedKafka(
        free_port(), backend="tansu", log_path=tmp_path / "broker.log", stop_timeout_s=0.5
    ) as broker:
        if broker.backend != "tansu":
            pytest.skip("restarting a broker on the same port needs Tansu")
        yield broker


def messages(first: int, count: int) -> list[bytes | None]:
    return [json.dumps({"id": n}).encode() for n in range(first, first + count)]


async def instances_per_id(pool: Pool) -> Counter[int]:
    rows = await pool.fetch("SELECT trigger_message->>'value' AS value FROM instances")
    return Counter(int(json.loads(r["value"])["id"]) for r in rows)


async def wait_admitted(pool: Pool, ids: range) -> float:
    """Wait until every id has an instance; the seconds it took."""
    started = time.monotonic()

    async def all_there() -> bool | None:
        seen = await instances_per_id(pool)
        return True if all(seen[n] for n in ids) else None

    await eventually(all_there, RECOVER_WAIT_S)
    return time.monotonic() - started


async def report(pool: Pool, scenario: str, ids: range, recover_s: float) -> None:
    seen = await instances_per_id(pool)
    lost = sum(1 for n in ids if seen[n] == 0)
    duplicated = sum(1 for n in ids if seen[n] > 1)
    admitted = sum(1 for n in ids if seen[n] > 0)
    # The summary line is this suite's output (CI collects it), hence a print.
    line = (
        f"chaos: scenario={scenario} sent={len(ids)} admitted={admitted} lost={lost} "
        f"duplicated={duplicated} recover_s={recover_s:.1f}"
    )
    SUMMARIES.append(line)
    # The scenario's summary line is part of its result: pytest -s shows it.
    print(line)  # noqa: T201
    assert (lost, duplicated) == (0, 0)


async def delete_topic(broker: EmbeddedKafka, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_reused_offsets_after_a_topic_recreate_and_a_broker_restart_lose_nothing(
    pool: Pool, db_url: str, own_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    port = int(own_broker.bootstrap.rpartition(":")[2])
    await create_topics(own_broker.bootstrap, [TOPIC])
    await bind(pool, TOPIC)  # dedup: offset (the default)
    async with listener_process(db_url, own_broker, group_id(), tmp_path / "listener.log"):
        before = range(0, PER_PHASE)
        await send(own_broker, TOPIC, messages(before.start, len(before)))
        await report(pool, "kafka-baseline", before, await wait_admitted(pool, before))

        # Delete and recreate the topic, then produce: offsets 0.. again, all new records.
        await delete_topic(own_broker, TOPIC)
        await create_topics(own_broker.bootstrap, [TOPIC])
        recreated = range(PER_PHASE, PER_PHASE + PER_PHASE // 2)
        await send(own_broker, TOPIC, messages(recreated.start, len(recreated)))
        await report(pool, "kafka-topic-recreate", recreated, await wait_admitted(pool, recreated))

        # Restart the broker (memory storage: no topics, no committed offsets), then produce.
        await asyncio.to_thread(own_broker.stop)
        restarted_at = time.monotonic()
        async with EmbeddedKafka(
            port, backend="tansu", log_path=tmp_path / "restarted.log", stop_timeout_s=0.5
        ) as restarted:
            await create_topics(restarted.bootstrap, [TOPIC])
            after = range(2 * PER_PHASE, 3 * PER_PHASE)
            await send(restarted, TOPIC, messages(after.start, len(after)))
            await wait_admitted(pool, after)
            await report(pool, "kafka-broker-restart", after, time.monotonic() - restarted_at)
    # Nothing else was admitted twice either, whatever phase it was sent in.
    everything = range(0, 3 * PER_PHASE)
    seen = await instances_per_id(pool)
    assert set(seen) == {n for n in everything if n < PER_PHASE * 3 // 2 or n >= 2 * PER_PHASE}
    assert max(seen.values()) == 1
