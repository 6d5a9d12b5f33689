"""Replays of a Kafka trigger against a real broker and PostgreSQL, carried out by the listener.

Records produced while the trigger was disabled were recorded but never admitted for it; the
others were admitted normally. `missing` admits exactly the first kind, `all` admits every
record again as a `replay` instance linked to the event that first admitted it, and neither
moves the group's committed offsets.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from shared.db import connections
from shared.db import events as event_repo
from shared.db import instances as instance_repo
from shared.db import replays as replay_repo
from shared.db import triggers as trigger_repo
from shared.models.replays import ReplayOut, ReplayRequest
from shared.models.triggers import KafkaTriggerSpec
from tests.integration.kafka_support import TopicFactory, producer
from tests.support.kafka_listener import (
    Pool,
    bind,
    committed,
    eventually,
    running_listener,
    send,
    wait_committed,
    wait_events,
)
from tests.support.secrets import suite_box

FAST = {"replay_poll_interval_s": 0.05}
# Replays queued while the listener runs start on NOTIFY, not on this fallback.
NOTIFIED = {"replay_poll_interval_s": 300}
LIVE, MISSED = 5, 3


async def replay(
    pool: Pool, trigger: str, body: dict[str, Any], max_events: int = 1000
) -> ReplayOut:
    """Queue a replay as the API does and wait until the listener has finished it."""
    t = await trigger_repo.get(pool, 1, trigger)
    accepted = await replay_repo.create(
        pool, 1, t.id, t.name, t.type, ReplayRequest.model_validate(body), max_events
    )

    async def finished() -> ReplayOut | None:
        out = await replay_repo.get(pool, 1, accepted.replay_id)
        return out if out.state in ("succeeded", "failed") else None

    return await eventually(finished)


async def kinds(pool: Pool, workflow: str = "wf_kt") -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT i.kind, count(*) AS n FROM instances i JOIN workflows w ON w.id = i.workflow_id "
        "WHERE w.name = $1 GROUP BY i.kind",
        workflow,
    )
    return {r["kind"]: r["n"] for r in rows}


async def set_enabled(pool: Pool, name: str, enabled: bool) -> None:
    t = await trigger_repo.get(pool, 1, name)
    spec = KafkaTriggerSpec.model_validate({**t.spec, "enabled": enabled})
    async with pool.acquire() as conn:
        await trigger_repo.upsert(conn, "default", 1, spec)


async def test_missing_admits_only_unadmitted_records_and_all_reruns_every_record(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    before = datetime.now(UTC) - timedelta(minutes=1)
    await bind(pool, topic.name, trigger="kt")
    # A second trigger on the topic keeps the group reading it while `kt` is disabled.
    await bind(pool, topic.name, trigger="other")
    async with running_listener(db_url, kafka_broker, settings=NOTIFIED) as listener:
        live = await send(kafka_broker, topic.name, [b'{"n": %d}' % i for i in range(LIVE)])
        await wait_events(pool, LIVE)
        await set_enabled(pool, "kt", False)
        missed = await send(kafka_broker, topic.name, [b'{"m": %d}' % i for i in range(MISSED)])
        await wait_events(pool, LIVE + MISSED)
        await set_enabled(pool, "kt", True)
        await wait_committed(kafka_broker, listener.group, topic.name, missed[-1] + 1)
        group_offset = await committed(kafka_broker, listener.group, topic.name)
        assert await kinds(pool) == {"triggered": LIVE}
        assert await kinds(pool, "wf_other") == {"triggered": LIVE + MISSED}

        after = datetime.now(UTC) + timedelta(minutes=1)
        missing = await replay(pool, "kt", {"mode": "missing", "from": before, "to": after})
        assert missing.state == "succeeded", missing.error
        assert (missing.read, missing.admitted, missing.duplicate) == (LIVE + MISSED, MISSED, LIVE)
        assert await kinds(pool) == {"triggered": LIVE, "replay": MISSED}
        offsets = await pool.fetch(
            "SELECT (trigger_message->>'offset')::int AS o FROM instances WHERE kind = 'replay'"
        )
        assert sorted(r["o"] for r in offsets) == missed
        # Only the replayed trigger sees replayed records.
        assert await kinds(pool, "wf_other") == {"triggered": LIVE + MISSED}

        again = await replay(pool, "kt", {"mode": "missing", "from": before, "to": after})
        assert (again.read, again.admitted, again.duplicate) == (LIVE + MISSED, 0, LIVE + MISSED)
        assert await kinds(pool) == {"triggered": LIVE, "replay": MISSED}

        everything = await replay(
            pool, "kt", {"mode": "all", "from": {0: live[0]}, "to": {0: missed[-1] + 1}}
        )
        assert everything.state == "succeeded", everything.error
        assert (everything.read, everything.admitted) == (LIVE + MISSED, LIVE + MISSED)
        assert await kinds(pool) == {"triggered": LIVE, "replay": 2 * MISSED + LIVE}
        assert await kinds(pool, "wf_other") == {"triggered": LIVE + MISSED}
        # The group's position is exactly what its own consumption committed.
        assert await committed(kafka_broker, listener.group, topic.name) == group_offset

    # Each `all` instance links back to the event that first admitted its record for `kt`.
    first_event = {
        r["o"]: r["event_id"]
        for r in await pool.fetch(
            "SELECT (e.payload->>'offset')::int AS o, a.event_id FROM admissions a "
            "JOIN triggers t ON t.id = a.trigger_id JOIN events e ON e.id = a.event_id "
            "WHERE t.name = 'kt' AND a.dedup_key NOT LIKE 'replay:%'"
        )
    }
    assert sorted(first_event) == live + missed
    rows = await pool.fetch(
        "SELECT i.id, e.id AS event_id, (i.trigger_message->>'offset')::int AS o FROM instances i "
        "JOIN events e ON e.id = i.event_id WHERE e.replay_id = $1",
        everything.id,
    )
    assert sorted(r["o"] for r in rows) == live + missed
    for row in rows:
        event = await event_repo.get(pool, 1, row["event_id"])
        assert (event.replay_id, event.replay_of) == (everything.id, first_event[row["o"]])
        [outcome] = event.outcomes
        assert outcome.outcome == "admitted"
        assert outcome.instance_ids == [row["id"]]
        assert outcome.detail == f"replay {everything.id} of event {first_event[row['o']]}"
        instance = await instance_repo.get(pool, 1, row["id"])
        assert (instance.kind, instance.replay_id, instance.replay_of) == (
            "replay",
            everything.id,
            first_event[row["o"]],
        )


async def test_a_range_over_max_events_fails_before_admitting_anything(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt")
    offsets = await send(kafka_broker, topic.name, [b"{}"] * 4)
    async with running_listener(db_url, kafka_broker, settings=FAST):
        out = await replay(
            pool, "kt", {"mode": "all", "from": {0: 0}, "to": {0: offsets[-1] + 1}}, max_events=3
        )
    assert out.state == "failed"
    assert out.error == "the range holds more than max_events 3 records; narrow from/to"
    assert out.read == 0
    assert "replay" not in await kinds(pool)


async def test_a_partition_the_topic_lacks_fails_naming_it(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt")
    async with running_listener(db_url, kafka_broker, settings=FAST):
        out = await replay(pool, "kt", {"from": {7: 0}, "to": {7: 5}})
    assert out.state == "failed"
    assert out.error is not None and out.error.startswith(
        f"from: topic {topic.name!r} has no partition 7"
    )


@pytest.mark.timeout(180)
async def test_a_trigger_on_a_connection_is_replayed_from_that_cluster(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    async with EmbeddedKafka(log_path=tmp_path / "second.log", stop_timeout_s=0.5) as second:
        await create_topics(kafka_broker.bootstrap, [topic])
        await create_topics(second.bootstrap, [topic])
        spec = connections.ConnectionSpec(
            name="second", kind="kafka", config={"bootstrap_servers": second.bootstrap}
        )
        await connections.upsert(pool, 1, spec, suite_box())
        await bind(pool, topic, trigger="kt", connection="second")
        # The same topic name on the default cluster holds other records.
        await send(kafka_broker, topic, [b'{"here": 1}'] * 5)
        offsets = await send(second, topic, [b'{"there": 1}', b'{"there": 2}'])
        now = datetime.now(UTC)
        async with running_listener(db_url, kafka_broker, settings=FAST):
            out = await replay(
                pool,
                "kt",
                {"mode": "all", "from": now - timedelta(hours=1), "to": now + timedelta(hours=1)},
            )
        assert out.state == "succeeded", out.error
        assert (out.read, out.admitted) == (2, 2)
        refs = await pool.fetch("SELECT ref FROM events WHERE replay_id = $1 ORDER BY id", out.id)
        assert [r["ref"] for r in refs] == [f"second:{topic}/0/{o}" for o in offsets]


async def test_a_job_whose_listener_died_is_claimed_again_once_its_lease_ran_out(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt")
    offsets = await send(kafka_broker, topic.name, [b"{}"] * 3)
    t = await trigger_repo.get(pool, 1, "kt")
    request = ReplayRequest.model_validate({"from": {0: 0}, "to": {0: offsets[-1] + 1}})
    accepted = await replay_repo.create(pool, 1, t.id, t.name, "kafka", request, 100)
    # As a listener that claimed it and was killed an hour ago would have left it.
    await pool.execute(
        "UPDATE replays SET state = 'running', claimed_by = 'gone', read = 2, "
        "heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        accepted.replay_id,
    )
    async with running_listener(db_url, kafka_broker, settings=FAST):

        async def finished() -> ReplayOut | None:
            out = await replay_repo.get(pool, 1, accepted.replay_id)
            return out if out.state in ("succeeded", "failed") else None

        out = await eventually(finished)
    assert (out.state, out.read, out.admitted) == ("succeeded", 3, 3)
    claimed = await pool.fetchrow(
        "SELECT claimed_by, attempts FROM replays WHERE id = $1", accepted.replay_id
    )
    assert claimed is not None
    assert claimed["claimed_by"].startswith("kafka-listener:")
    assert claimed["attempts"] == 1


async def test_the_trigger_filter_applies_to_replayed_records(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt", key="k1")
    keys: list[bytes | None] = [b"k1", b"k2", b"k1", None, b"k2"]
    offsets = await send(kafka_broker, topic.name, [b"{}"] * len(keys), keys=keys)
    async with running_listener(db_url, kafka_broker, settings=FAST):
        out = await replay(
            pool, "kt", {"mode": "all", "from": {0: offsets[0]}, "to": {0: offsets[-1] + 1}}
        )
    assert (out.read, out.admitted, out.filtered, out.other) == (5, 2, 3, 0)
    # (The listener may admit the k1 records live as well; that is not the replay's doing.)
    assert (await kinds(pool)).get("replay") == 2


async def test_a_time_range_is_read_to_the_last_record_of_batched_produce(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    """Records produced in batches: every one is in the range, whatever end offset the broker
    reports while they are read (the embedded broker reports the start of its last batch)."""
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt")
    before = datetime.now(UTC) - timedelta(minutes=1)
    async with producer(kafka_broker) as client:
        for i in range(300):
            await client.send(topic.name, b'{"n": %d}' % i, partition=0)
        await client.flush()
    after = datetime.now(UTC) + timedelta(minutes=1)
    async with running_listener(db_url, kafka_broker, settings=FAST):
        out = await replay(pool, "kt", {"mode": "all", "from": before, "to": after})
    assert (out.state, out.read, out.admitted) == ("succeeded", 300, 300)
    offsets = await pool.fetch(
        "SELECT (e.payload->>'offset')::int AS o FROM events e WHERE e.replay_id = $1", out.id
    )
    assert sorted(r["o"] for r in offsets) == list(range(300))
