"""Two Kafka clusters under one `sluice run kafka-listener` process.

The session broker is the default cluster (`SLUICE_KAFKA_BOOTSTRAP`); a second broker is reached
through a workspace connection of kind `kafka` that a trigger names. Both fire; with the second
broker stopped, the default cluster keeps admitting; the connection's secret never reaches the
process's output.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from shared.db import connections
from tests.integration.kafka_support import group_id
from tests.support.kafka_listener import Pool, bind, eventually, listener_process, send
from tests.support.secrets import suite_box

SECRET = "kafka-secret-" + uuid.uuid4().hex
PROCESS_WAIT_S = 30.0


@pytest.fixture
async def second_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    async with EmbeddedKafka(log_path=tmp_path / "second.log", stop_timeout_s=0.5) as broker:
        yield broker


async def values(pool: Pool) -> dict[str, list[int]]:
    rows = await pool.fetch(
        "SELECT w.name, i.trigger_message->>'value' AS value FROM instances i "
        "JOIN workflows w ON w.id = i.workflow_id ORDER BY i.id"
    )
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(json.loads(r["value"])["n"])
    return out


@pytest.mark.timeout(180)
async def test_a_listener_process_reads_two_clusters_and_survives_one_going_down(
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    second_broker: EmbeddedKafka,
    tmp_path: Path,
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic])
    await create_topics(second_broker.bootstrap, [topic])
    spec = connections.ConnectionSpec(
        name="second",
        kind="kafka",
        config={"bootstrap_servers": second_broker.bootstrap},
        secrets={"sasl_password": SECRET},
    )
    await connections.upsert(pool, 1, spec, suite_box())
    await bind(pool, topic, trigger="on_default")
    await bind(pool, topic, trigger="on_second", connection="second")
    log = tmp_path / "listener.log"
    async with listener_process(db_url, kafka_broker, group_id(), log):
        await send(kafka_broker, topic, [b'{"n": 1}'])
        await send(second_broker, topic, [b'{"n": 2}'])

        async def both() -> dict[str, list[int]] | None:
            seen = await values(pool)
            return seen if len(seen) == 2 else None

        assert await eventually(both, PROCESS_WAIT_S) == {
            "wf_on_default": [1],
            "wf_on_second": [2],
        }
        await asyncio.to_thread(second_broker.stop)
        await send(kafka_broker, topic, [b'{"n": 3}'])

        async def third() -> bool | None:
            return True if (await values(pool)).get("wf_on_default") == [1, 3] else None

        await eventually(third, PROCESS_WAIT_S)
    output = log.read_text()
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {line.get("cluster") for line in lines} >= {"default", "1/second"}
