"""Replays of an S3 trigger against a real S3 endpoint (moto) and PostgreSQL, carried out by the
storage listener: uploads notified through SQS while the trigger was enabled were admitted
normally, the ones notified while it was disabled were recorded but never admitted for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.dev.servers.s3 import EmbeddedS3
from shared.db import events as event_repo
from shared.db import instances as instance_repo
from shared.db import replays as replay_repo
from shared.db import triggers as trigger_repo
from shared.models.replays import ReplayOut, ReplayRequest
from shared.models.triggers import S3TriggerSpec
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import (
    NotifiedBucket,
    Pool,
    eventually,
    listener_settings,
    running_listener,
    wait_for_events,
)

LIVE = [f"input/live-{i}.csv" for i in range(4)]
MISSED = [f"input/missed-{i}.csv" for i in range(3)]


async def replay(
    pool: Pool, body: dict[str, Any], trigger: str = "files", max_events: int = 1000
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


async def set_enabled(pool: Pool, enabled: bool) -> None:
    t = await trigger_repo.get(pool, 1, "files")
    spec = S3TriggerSpec.model_validate({**t.spec, "enabled": enabled})
    async with pool.acquire() as conn:
        await trigger_repo.upsert(conn, "default", 1, spec)


async def keys_by_kind(pool: Pool) -> dict[str, list[str]]:
    rows = await pool.fetch("SELECT kind, trigger_message FROM instances ORDER BY id")
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["kind"], []).append(r["trigger_message"]["data"]["s3"]["object"]["key"])
    return {kind: sorted(keys) for kind, keys in out.items()}


async def test_missing_admits_only_unadmitted_objects_and_all_reruns_every_object(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("process_file", trigger="files"))
    settings = listener_settings(
        db_url, embedded_s3, sqs_queue_urls=queue.url, replay_poll_interval_s=0.05
    )
    before = datetime.now(UTC) - timedelta(minutes=1)
    async with running_listener(settings):
        for key in LIVE:
            await s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
        await wait_for_events(pool, len(LIVE))
        await set_enabled(pool, False)
        for key in MISSED:
            await s3_client.put_object(Bucket=bucket, Key=key, Body=b"y")
        # Outside the trigger's pattern: never listed (prefix) or never read (glob).
        await s3_client.put_object(Bucket=bucket, Key="other/z.csv", Body=b"z")
        await s3_client.put_object(Bucket=bucket, Key="input/deep/z.csv", Body=b"z")
        await wait_for_events(pool, len(LIVE) + len(MISSED) + 2)
        await set_enabled(pool, True)
        assert await keys_by_kind(pool) == {"triggered": LIVE}

        after = datetime.now(UTC) + timedelta(minutes=1)
        missing = await replay(pool, {"mode": "missing", "from": before, "to": after})
        assert missing.state == "succeeded", missing.error
        assert (missing.read, missing.admitted, missing.duplicate, missing.other) == (
            len(LIVE) + len(MISSED),
            len(MISSED),
            len(LIVE),
            0,
        )
        assert await keys_by_kind(pool) == {"triggered": LIVE, "replay": MISSED}

        again = await replay(pool, {"mode": "missing", "from": before, "to": after})
        assert (again.admitted, again.duplicate) == (0, len(LIVE) + len(MISSED))

        everything = await replay(pool, {"mode": "all", "from": before, "to": after})
        assert everything.state == "succeeded", everything.error
        assert everything.admitted == len(LIVE) + len(MISSED)
        assert await keys_by_kind(pool) == {
            "triggered": LIVE,
            "replay": sorted(MISSED + LIVE + MISSED),
        }

        # A range that holds no object reads nothing.
        empty = await replay(pool, {"from": before - timedelta(days=2), "to": before})
        assert (empty.state, empty.read) == ("succeeded", 0)

    first = {
        r["key"]: r["event_id"]
        for r in await pool.fetch(
            "SELECT e.payload->'data'->'s3'->'object'->>'key' AS key, a.event_id "
            "FROM admissions a JOIN events e ON e.id = a.event_id "
            "WHERE a.dedup_key NOT LIKE 'replay:%'"
        )
    }
    assert sorted(first) == sorted(LIVE + MISSED)
    rows = await pool.fetch(
        "SELECT i.id, i.event_id, i.trigger_message->'data'->'s3'->'object'->>'key' AS key "
        "FROM instances i JOIN events e ON e.id = i.event_id WHERE e.replay_id = $1",
        everything.id,
    )
    assert sorted(r["key"] for r in rows) == sorted(LIVE + MISSED)
    for row in rows:
        event = await event_repo.get(pool, 1, row["event_id"])
        assert (event.replay_id, event.replay_of) == (everything.id, first[row["key"]])
        instance = await instance_repo.get(pool, 1, row["id"])
        assert (instance.kind, instance.replay_of) == ("replay", first[row["key"]])


async def test_more_objects_than_max_events_fail_before_admitting_anything(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
) -> None:
    bucket = notified_bucket.bucket
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("process_file", trigger="files"))
    for key in LIVE:
        await s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    settings = listener_settings(db_url, embedded_s3, replay_poll_interval_s=0.05)
    now = datetime.now(UTC)
    async with running_listener(settings):
        out = await replay(
            pool,
            {"mode": "all", "from": now - timedelta(hours=1), "to": now + timedelta(hours=1)},
            max_events=len(LIVE) - 1,
        )
    assert out.state == "failed"
    assert (
        out.error == f"the range holds more than max_events {len(LIVE) - 1} objects; narrow from/to"
    )
    assert out.read == 0
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0
