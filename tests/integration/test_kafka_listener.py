"""The Kafka listener against a real Kafka-protocol broker and PostgreSQL.

Every test runs the listener service in-process (`run(settings, stop)`) on its own consumer group
and topic, produces records, and checks what intake recorded and what the group committed.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

import pytest

from services.dev.servers.kafka import EmbeddedKafka
from shared.intake import admit_batch
from shared.kafka import admission
from tests.factories import kafka_event
from tests.integration.kafka_support import (
    TopicFactory,
)
from tests.support.kafka_listener import (
    Pool,
    bind,
    instance_count,
    outcomes_by_ref,
    running_listener,
    send,
    wait_committed,
    wait_events,
)

MiB = 1 << 20


async def test_a_message_starts_one_instance_with_its_trigger_message(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="user_action")
    async with running_listener(db_url, kafka_broker) as listener:
        [offset] = await send(
            kafka_broker,
            topic.name,
            [b'{"user_id": "u1", "action_type": "login"}'],
            keys=[b"u1"],
            headers=[[("message-id", b"m-1"), ("trace", b"\xff\xfe")]],
        )
        [event] = await wait_events(pool, 1)
        await wait_committed(kafka_broker, listener.group, topic.name, offset + 1)
    [instance] = await pool.fetch("SELECT * FROM instances")
    message = instance["trigger_message"]
    assert {k: message[k] for k in ("topic", "partition", "offset", "key", "value", "headers")} == {
        "topic": topic.name,
        "partition": 0,
        "offset": offset,
        "key": "u1",
        "value": '{"user_id": "u1", "action_type": "login"}',
        "headers": {"message-id": "m-1", "trace": base64.b64encode(b"\xff\xfe").decode()},
    }
    assert message["header_encodings"] == {"trace": "base64"}
    assert isinstance(message["timestamp_ms"], int)
    assert message["timestamp"].endswith("Z")
    assert instance["kind"] == "triggered"
    assert instance["event_id"] == event["id"]
    assert event["ref"] == f"{topic.name}/0/{offset}"
    assert event["source"] == "kafka"
    assert await outcomes_by_ref(pool) == {event["ref"]: [("admitted", None)]}


@pytest.mark.parametrize(
    ("trigger", "records", "expected"),
    [
        pytest.param(
            {"key": "k1"},
            [(b"k1", b"{}"), (b"k2", b"{}"), (None, b"{}"), (b"K1", b"{}"), (b"k1 ", b"{}")],
            ["admitted", "filtered", "filtered", "filtered", "filtered"],
            id="key-exact-match",
        ),
        pytest.param(
            {"filter": "value.action_type == 'login'"},
            [
                (None, b'{"action_type": "login"}'),
                (None, b'{"action_type": "purchase"}'),
                (None, b"login"),  # not JSON: value stays a string without fields
                (None, b'{"action_type": "login"'),  # broken JSON
                (None, b"\xff" + b'{"action_type": "login"}'),  # base64: never parsed
                (b"deleted", None),  # tombstone: no value
                (None, b'[{"action_type": "login"}]'),
            ],
            ["admitted", "filtered", "filtered", "filtered", "filtered", "filtered", "filtered"],
            id="jmespath-on-json-value",
        ),
        pytest.param(
            {"filter": "value.amount > `100` && headers.source == 'shop'"},
            [(None, b'{"amount": 150}'), (None, b'{"amount": 50}'), (None, b'{"price": 150}')],
            ["admitted", "filtered", "filtered"],
            id="jmespath-numbers-and-headers",
        ),
        pytest.param(
            {"key": "k1", "filter": "value.ok"},
            [(b"k1", b'{"ok": true}'), (b"k2", b'{"ok": true}'), (b"k1", b'{"ok": false}')],
            ["admitted", "filtered", "filtered"],
            id="key-and-filter",
        ),
        pytest.param(
            {"filter": "abs(value.n) > `1`"},
            [(None, b'{"n": -5}'), (None, b'{"n": "five"}')],
            ["admitted", "invalid"],  # a filter that cannot evaluate the message: invalid
            id="filter-evaluation-error",
        ),
    ],
)
async def test_key_and_filter_decide_which_messages_start_runs(
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
    trigger: dict[str, Any],
    records: list[tuple[bytes | None, bytes | None]],
    expected: list[str],
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, **trigger)
    async with running_listener(db_url, kafka_broker) as listener:
        offsets = await send(
            kafka_broker,
            topic.name,
            [value for _, value in records],
            keys=[key for key, _ in records],
            headers=[[("source", b"shop")]] * len(records),
        )
        await wait_events(pool, len(records))
        await wait_committed(kafka_broker, listener.group, topic.name, offsets[-1] + 1)
    found = await outcomes_by_ref(pool)
    assert [found[f"{topic.name}/0/{o}"][0][0] for o in offsets] == expected
    assert await instance_count(pool) == expected.count("admitted")


@pytest.mark.parametrize(
    ("dedup", "headers", "instances", "outcomes"),
    [
        pytest.param(
            "offset",
            [[("id", b"a")], [("id", b"a")], [("id", b"b")]],
            3,
            ["admitted", "admitted", "admitted"],
            id="offset: every record is its own event",
        ),
        pytest.param(
            "${workflow.triggerMessage.headers.id}",
            [[("id", b"a")], [("id", b"a")], [("id", b"b")], []],
            2,
            ["admitted", "duplicate", "admitted", "invalid"],
            id="template: the business key decides",
        ),
        pytest.param(
            "${workflow.triggerMessage.value.order_id}",
            [[], [], []],
            1,
            ["admitted", "duplicate", "duplicate"],
            id="template over the JSON value",
        ),
    ],
)
async def test_dedup_by_offset_or_by_template(
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
    dedup: str,
    headers: list[list[tuple[str, bytes]]],
    instances: int,
    outcomes: list[str],
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, dedup=dedup)
    async with running_listener(db_url, kafka_broker) as listener:
        offsets = await send(
            kafka_broker,
            topic.name,
            [b'{"order_id": 7}'] * len(headers),
            headers=headers,
        )
        await wait_events(pool, len(headers))
        await wait_committed(kafka_broker, listener.group, topic.name, offsets[-1] + 1)
    found = await outcomes_by_ref(pool)
    assert [found[f"{topic.name}/0/{o}"][0][0] for o in offsets] == outcomes
    assert await instance_count(pool) == instances


async def test_poison_records_are_recorded_invalid_and_do_not_stall_the_partition(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, dedup="${workflow.triggerMessage.headers.id}")
    records: list[tuple[bytes | None, list[tuple[str, bytes]]]] = [
        (b"x" * (MiB + 1), [("id", b"big")]),  # over the 1 MiB limit
        (b"no id header", []),  # the dedup template cannot be computed
        (b"\x00\x01binary\xff garbage", [("id", b"bin")]),  # not UTF-8: base64, admitted
        (b"text with a NUL \x00 inside", [("id", b"nul")]),  # jsonb cannot hold U+0000
        (b'{"fine": true}', [("id", b"ok")]),
    ]
    async with running_listener(db_url, kafka_broker) as listener:
        offsets = await send(
            kafka_broker,
            topic.name,
            [value for value, _ in records],
            headers=[h for _, h in records],
        )
        events = await wait_events(pool, len(records))
        await wait_committed(kafka_broker, listener.group, topic.name, offsets[-1] + 1)
    found = await outcomes_by_ref(pool)
    verdicts = [found[f"{topic.name}/0/{o}"][0] for o in offsets]
    assert [outcome for outcome, _ in verdicts] == [
        "invalid",
        "invalid",
        "admitted",
        "admitted",
        "admitted",
    ]
    assert verdicts[0][1] is not None
    assert "over the limit of 1048576 bytes" in verdicts[0][1]
    assert verdicts[1][1] is not None
    assert "headers.id" in verdicts[1][1]
    big = next(e for e in events if e["ref"] == f"{topic.name}/0/{offsets[0]}")
    assert big["payload_truncated"] is True
    assert "over the limit" in big["error"]
    messages = {
        r["trigger_message"]["offset"]: r["trigger_message"]
        for r in await pool.fetch("SELECT trigger_message FROM instances")
    }
    assert base64.b64decode(messages[offsets[2]]["value"]) == records[2][0]
    assert messages[offsets[2]]["value_encoding"] == "base64"
    assert base64.b64decode(messages[offsets[3]]["value"]) == records[3][0]
    assert messages[offsets[3]]["value_encoding"] == "base64"
    assert json.loads(messages[offsets[4]]["value"]) == {"fine": True}


async def test_one_topic_serves_triggers_in_several_workspaces(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    other = int(await pool.fetchval("INSERT INTO workspaces (name) VALUES ('team_b') RETURNING id"))
    await bind(pool, topic.name, trigger="a")
    await bind(pool, topic.name, trigger="b", workspace_id=other)
    async with running_listener(db_url, kafka_broker) as listener:
        [offset] = await send(kafka_broker, topic.name, [b"{}"])
        await wait_events(pool, 2)
        await wait_committed(kafka_broker, listener.group, topic.name, offset + 1)
    rows = await pool.fetch(
        "SELECT e.workspace_id, i.workspace_id AS instance_ws FROM events e "
        "JOIN instances i ON i.event_id = e.id ORDER BY e.workspace_id"
    )
    assert [(r["workspace_id"], r["instance_ws"]) for r in rows] == [(1, 1), (other, other)]


async def test_an_event_the_database_refuses_is_recorded_invalid_without_failing_the_batch(
    pool: Pool,
) -> None:
    await bind(pool, "orders")
    # A message built without the listener's U+0000 handling: jsonb refuses it.
    events = [kafka_event(offset=0), kafka_event(offset=1, value="a\x00b"), kafka_event(offset=2)]
    results = await admission.admit(partial(admit_batch, pool), events)
    outcomes = [[(o.outcome, o.detail) for r in rs for o in r.outcomes] for rs in results]
    assert [[kind for kind, _ in per_event] for per_event in outcomes] == [
        ["admitted"],
        ["invalid"],
        ["admitted"],
    ]
    detail = outcomes[1][0][1]
    assert detail is not None
    assert detail.startswith("cannot be admitted: UntranslatableCharacterError")
    assert await instance_count(pool) == 2
    assert await pool.fetchval("SELECT count(*) FROM events") == 3
