"""Triggers on two Kafka clusters at once: a workspace connection of kind `kafka` per trigger.

Two real brokers: the session's (the default cluster, `SLUICE_KAFKA_BOOTSTRAP`) and one of this
test's own, named by a connection. The same topic name exists on both, so routing is visible: a
message is matched only against the triggers of the cluster it was read from.
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
from shared.kafka.cluster import KafkaConnectionError, connection_settings
from shared.probes import READINESS
from shared.settings import KafkaSettings
from tests.support.kafka_listener import (
    Pool,
    bind,
    eventually,
    running_listener,
    sample,
    send,
)
from tests.support.secrets import suite_box

SECRET = "s3cr3t-kafka-password-" + uuid.uuid4().hex


@pytest.fixture
async def second_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    async with EmbeddedKafka(log_path=tmp_path / "second.log", stop_timeout_s=0.5) as broker:
        yield broker


async def add_connection(pool: Pool, name: str, config: dict[str, object]) -> None:
    spec = connections.ConnectionSpec(
        name=name, kind="kafka", config=config, secrets={"sasl_password": SECRET}
    )
    await connections.upsert(pool, 1, spec, suite_box())


async def values_by_workflow(pool: Pool) -> dict[str, list[int]]:
    rows = await pool.fetch(
        "SELECT w.name, i.trigger_message->>'value' AS value FROM instances i "
        "JOIN workflows w ON w.id = i.workflow_id ORDER BY i.id"
    )
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(json.loads(r["value"])["n"])
    return out


def component(name: str) -> bool | None:
    found = READINESS.snapshot().get(name)
    return None if found is None else found.ok


@pytest.mark.timeout(180)
async def test_triggers_on_two_clusters_fire_and_one_cluster_down_stalls_only_itself(
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    second_broker: EmbeddedKafka,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic])
    await create_topics(second_broker.bootstrap, [topic])
    await add_connection(pool, "second", {"bootstrap_servers": second_broker.bootstrap})
    await bind(pool, topic, trigger="on_default")
    await bind(pool, topic, trigger="on_second", connection="second")
    async with running_listener(db_url, kafka_broker):

        async def both_subscribed() -> bool | None:
            ready = component("kafka") and component("kafka:1/second")
            lag = [
                sample("sluice_kafka_consumer_lag", topic=topic, partition="0", cluster=c)
                for c in ("default", "1/second")
            ]
            return True if ready and None not in lag else None

        await send(kafka_broker, topic, [b'{"n": 1}'])
        await send(second_broker, topic, [b'{"n": 2}'])

        async def both_admitted() -> dict[str, list[int]] | None:
            seen = await values_by_workflow(pool)
            return seen if sum(map(len, seen.values())) >= 2 else None

        assert await eventually(both_admitted) == {"wf_on_default": [1], "wf_on_second": [2]}
        await eventually(both_subscribed)
        refs = {r["ref"] for r in await pool.fetch("SELECT ref FROM events")}
        assert refs == {f"{topic}/0/0", f"second:{topic}/0/0"}

        # The second cluster goes away: its readiness says so, the default one carries on.
        await asyncio.to_thread(second_broker.stop)

        async def second_down() -> bool | None:
            return True if component("kafka:1/second") is False else None

        await eventually(second_down)
        await send(kafka_broker, topic, [b'{"n": 3}'])

        async def third_admitted() -> bool | None:
            return True if (await values_by_workflow(pool)).get("wf_on_default") == [1, 3] else None

        await eventually(third_admitted, 10)
        assert component("kafka") is True
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "1/second" in out.out  # logs name the cluster


async def test_a_missing_or_invalid_connection_is_reported_naming_it(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka
) -> None:
    topic, other = f"orders-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic, other])
    await bind(pool, other, trigger="on_default")
    await bind(pool, topic, trigger="on_missing", connection="nowhere")
    await add_connection(pool, "broken", {"bootstrap_servers": "127.0.0.1:1", "sasl_mechanism": 7})
    await bind(pool, topic, trigger="on_broken", connection="broken")
    async with running_listener(db_url, kafka_broker):

        async def reported() -> tuple[str, str] | None:
            found = READINESS.snapshot()
            missing, broken = found.get("kafka:1/nowhere"), found.get("kafka:1/broken")
            if missing is None or broken is None:
                return None
            assert not missing.ok and not broken.ok
            return missing.detail, broken.detail

        missing, broken = await eventually(reported)
        assert missing == "connection 'nowhere' does not exist"
        assert "config.sasl_mechanism" in broken and "'broken'" in broken
        # The default cluster is unaffected; the topic the broken triggers name is not read
        # from it.
        await send(kafka_broker, topic, [b'{"n": 1}'])
        await send(kafka_broker, other, [b'{"n": 2}'])

        async def admitted() -> dict[str, list[int]] | None:
            seen = await values_by_workflow(pool)
            return seen if seen else None

        assert await eventually(admitted) == {"wf_on_default": [2]}
        assert await pool.fetchval("SELECT count(*) FROM events") == 1


@pytest.mark.parametrize(
    ("config", "secrets", "error"),
    [
        ({}, {}, "config.bootstrap_servers"),
        ({"bootstrap_servers": "h:1", "security_protocol": "TLS"}, {}, "config.security_protocol"),
        ({"bootstrap_servers": "h:1", "security_protocol": "SASL_SSL"}, {}, "sasl_mechanism"),
        ({"bootstrap_servers": "h:1", "ssl_cafile": 3}, {}, "config.ssl_cafile"),
        ({"bootstrap_servers": "h:1", "password": "x"}, {}, "unknown field 'password'"),
        ({"bootstrap_servers": "h:1"}, {"token": "x"}, "unknown field 'token'"),
    ],
)
def test_connection_fields_are_checked_by_name(
    config: dict[str, object], secrets: dict[str, str], error: str
) -> None:
    with pytest.raises(KafkaConnectionError, match=error) as raised:
        connection_settings(KafkaSettings(), "east", config, secrets)
    assert "'east'" in str(raised.value)


def test_a_connection_replaces_cluster_and_credentials_only() -> None:
    base = KafkaSettings(kafka_bootstrap="platform:9092", kafka_group_id="g", kafka_max_batch=7)
    settings = connection_settings(
        base,
        "east",
        {
            "bootstrap_servers": "east:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "u",
        },
        {"sasl_password": SECRET},
    )
    assert (settings.kafka_bootstrap, settings.kafka_security_protocol) == ("east:9093", "SASL_SSL")
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert (settings.kafka_group_id, settings.kafka_max_batch) == ("g", 7)
