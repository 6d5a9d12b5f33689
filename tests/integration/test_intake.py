"""admit(): idempotent, transactional intake with a per-trigger audit trail."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared import intake
from shared.db import events as event_repo
from shared.db import instances as instance_repo
from shared.db import workflows as workflow_repo
from shared.db.errors import Invalid
from shared.models.events import IncomingEvent
from shared.models.instances import RunRequest
from tests.factories import (
    NOW,
    add_trigger,
    add_workflow,
    kafka_event,
    kafka_trigger,
    s3_event,
    s3_trigger,
    shell_node,
    workflow,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def count(pool: Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def test_200_concurrent_deliveries_make_one_instance(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    event = kafka_event(topic="orders", partition=2, offset=99)
    results = await asyncio.gather(*(intake.admit(pool, event) for _ in range(200)))
    outcomes = [r[0].outcomes[0] for r in results]
    admitted = [o for o in outcomes if o.outcome == "admitted"]
    duplicates = [o for o in outcomes if o.outcome == "duplicate"]
    assert len(admitted) == 1 and len(duplicates) == 199
    assert await count(pool, "SELECT count(*) FROM instances") == 1
    assert await count(pool, "SELECT count(*) FROM admissions") == 1
    # every duplicate names the instance the first delivery made
    assert {tuple(o.instance_ids) for o in duplicates} == {tuple(admitted[0].instance_ids)}
    assert await count(pool, "SELECT count(*) FROM events") == 200


async def test_one_event_two_triggers_three_workflows(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("t_csv", key_pattern="input/*.csv"))
        await add_trigger(conn, s3_trigger("t_all", key_pattern="**"))
        await add_workflow(conn, workflow("w1", trigger="t_csv"))
        await add_workflow(conn, workflow("w2", trigger="t_csv"))
        await add_workflow(conn, workflow("w3", trigger="t_all"))
    [result] = await intake.admit(pool, s3_event(key="input/a.csv"))
    assert sorted(o.trigger or "" for o in result.outcomes) == ["t_all", "t_csv"]
    assert len(result.instance_ids) == 3
    rows = await pool.fetch(
        "SELECT w.name, i.kind, i.state, i.event_id, i.trigger_message "
        "FROM instances i JOIN workflows w ON w.id = i.workflow_id ORDER BY w.name"
    )
    assert [r["name"] for r in rows] == ["w1", "w2", "w3"]
    assert {(r["kind"], r["state"], r["event_id"]) for r in rows} == {
        ("triggered", "waiting", result.event_id)
    }
    assert rows[0]["trigger_message"]["data"]["s3"]["object"]["key"] == "input/a.csv"
    # node rows exist, all pending
    assert await count(pool, "SELECT count(*) FROM node_instances WHERE state = 'pending'") == 3
    # a redelivery admits nothing new, for either trigger
    [again] = await intake.admit(pool, s3_event(key="input/a.csv"))
    assert {o.outcome for o in again.outcomes} == {"duplicate"}
    assert await count(pool, "SELECT count(*) FROM instances") == 3


async def test_frozen_and_unpublished_admit_nothing_and_say_why(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("frozen_wf", trigger="kt"))
        await workflow_repo.set_frozen(conn, 1, "frozen_wf", True)
        await add_workflow(conn, workflow("draft_wf", trigger="kt"), publish=False)
    [result] = await intake.admit(pool, kafka_event(topic="orders"))
    by_wf = {o.workflow: o for o in result.outcomes}
    assert by_wf["frozen_wf"].outcome == "frozen"
    assert by_wf["draft_wf"].outcome == "unpublished"
    assert "no published version" in (by_wf["draft_wf"].detail or "")
    assert await count(pool, "SELECT count(*) FROM instances") == 0
    # nothing consumed the dedup key: once unfrozen, a redelivery runs
    assert await count(pool, "SELECT count(*) FROM admissions") == 0
    async with pool.acquire() as conn:
        await workflow_repo.set_frozen(conn, 1, "frozen_wf", False)
    [again] = await intake.admit(pool, kafka_event(topic="orders"))
    assert len(again.instance_ids) == 1
    # the audit record is readable back with its outcomes
    stored = await event_repo.get(pool, 1, result.event_id)
    assert {o.outcome for o in stored.outcomes} == {"frozen", "unpublished"}


async def test_filtered_disabled_no_trigger_no_workflow(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(
            conn, kafka_trigger("login", "acts", filter="value.action_type == 'login'")
        )
        await add_trigger(conn, kafka_trigger("off", "acts", enabled=False))
        await add_trigger(conn, kafka_trigger("lonely", "acts"))
        await add_workflow(conn, workflow("wf", trigger="login"))
    [result] = await intake.admit(
        pool, kafka_event(topic="acts", value='{"action_type": "purchase"}')
    )
    by_trigger = {o.trigger: o for o in result.outcomes}
    assert by_trigger["login"].outcome == "filtered"
    assert "filter" in (by_trigger["login"].detail or "")
    assert by_trigger["off"].outcome == "disabled"
    assert by_trigger["lonely"].outcome == "no_workflow"
    [nobody] = await intake.admit(pool, kafka_event(topic="unwatched"))
    assert [o.outcome for o in nobody.outcomes] == ["no_trigger"]


async def test_invalid_event_is_recorded_and_does_not_stop_the_batch(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    bad = IncomingEvent(
        source="kafka",
        subject="orders",
        ref="orders/0/1",
        error="value is not valid UTF-8",
        raw="\\xff\\xfe",
        received_at=NOW,
    )
    results = await intake.admit_batch(pool, [kafka_event(offset=0), bad, kafka_event(offset=2)])
    assert [r[0].outcomes[0].outcome for r in results] == ["admitted", "invalid", "admitted"]
    assert results[1][0].outcomes[0].detail == "value is not valid UTF-8"
    stored = await event_repo.get(pool, 1, results[1][0].event_id)
    assert stored.error == "value is not valid UTF-8"


async def test_batch_with_duplicates_inside_it(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    batch = [kafka_event(offset=i % 250) for i in range(500)]
    results = await intake.admit_batch(pool, batch)
    kinds = [r[0].outcomes[0].outcome for r in results]
    assert kinds.count("admitted") == 250 and kinds.count("duplicate") == 250
    assert await count(pool, "SELECT count(*) FROM instances") == 250
    # the in-batch duplicate points at the instance its twin created
    assert results[300][0].outcomes[0].instance_ids == results[50][0].outcomes[0].instance_ids


@pytest.mark.parametrize(("mode", "expected_instances"), [("etag", 2), ("key", 1), ("none", 3)])
async def test_s3_dedup_modes_on_reupload(pool: Pool, mode: str, expected_instances: int) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("st", dedup=mode, key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("wf", trigger="st"))
    await intake.admit(pool, s3_event(key="input/a.csv", etag="e1"))
    await intake.admit(pool, s3_event(key="input/a.csv", etag="e1"))  # redelivery
    await intake.admit(pool, s3_event(key="input/a.csv", etag="e2"))  # new content
    assert await count(pool, "SELECT count(*) FROM instances") == expected_instances


async def test_kafka_template_dedup_missing_header_is_invalid_for_that_trigger(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(
            conn,
            kafka_trigger("kt", "orders", dedup="${workflow.triggerMessage.headers.message-id}"),
        )
        await add_workflow(conn, workflow("wf", trigger="kt"))
    [r] = await intake.admit(pool, kafka_event(offset=1))
    assert r.outcomes[0].outcome == "invalid" and "message-id" in (r.outcomes[0].detail or "")
    [a] = await intake.admit(pool, kafka_event(offset=2, headers={"message-id": "m1"}))
    [b] = await intake.admit(pool, kafka_event(offset=3, headers={"message-id": "m1"}))
    assert (a.outcomes[0].outcome, b.outcomes[0].outcome) == ("admitted", "duplicate")


async def test_overflow_cancel_new_and_replace(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(
            conn,
            workflow(
                "cn", trigger="kt", policy={"max_parallel_instances": 2, "overflow": "cancel_new"}
            ),
        )
    results = [await intake.admit(pool, kafka_event(offset=i)) for i in range(4)]
    kinds = [r[0].outcomes[-1].outcome for r in results]
    assert kinds == ["admitted", "admitted", "overflow", "overflow"]
    states = [r["state"] for r in await pool.fetch("SELECT state FROM instances ORDER BY id")]
    assert states == ["waiting", "waiting", "cancelled", "cancelled"]

    async with pool.acquire() as conn:
        await add_workflow(
            conn,
            workflow(
                "cn", trigger="kt", policy={"max_parallel_instances": 2, "overflow": "replace"}
            ),
        )
    await pool.execute(
        "UPDATE instances SET state = 'running' WHERE id = (SELECT min(id) FROM instances)"
    )
    first_waiting = await pool.fetchval("SELECT max(id) FROM instances WHERE state = 'waiting'")
    [r] = await intake.admit(pool, kafka_event(offset=10))
    assert r.outcomes[0].outcome == "admitted"
    assert (
        await pool.fetchval("SELECT state FROM instances WHERE id = $1", first_waiting)
        == "cancelled"
    )
    assert (
        await count(pool, "SELECT count(*) FROM instances WHERE state IN ('waiting', 'running')")
        == 2
    )


async def test_oversize_payload_is_truncated_in_the_audit_only(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    big = json.dumps({"blob": "x" * (1 << 20)})
    [r] = await intake.admit(pool, kafka_event(value=big))
    row = await pool.fetchrow(
        "SELECT payload, payload_truncated FROM events WHERE id = $1", r.event_id
    )
    assert row is not None
    assert row["payload_truncated"] is True
    assert len(row["payload"].encode()) <= 1 << 20
    message = await pool.fetchval("SELECT trigger_message FROM instances")
    assert message["value"] == big


async def test_event_in_two_workspaces_is_recorded_in_each(pool: Pool) -> None:
    other = await pool.fetchval("INSERT INTO workspaces (name) VALUES ('team_b') RETURNING id")
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
        await add_trigger(conn, kafka_trigger("kt", "orders"), workspace_id=other)
        await add_workflow(conn, workflow("wf", trigger="kt"), workspace_id=other)
    results = await intake.admit(pool, kafka_event())
    assert sorted(r.workspace_id for r in results) == [1, other]
    assert all(len(r.instance_ids) == 1 for r in results)
    ws = await pool.fetch("SELECT DISTINCT workspace_id FROM instances")
    assert len(ws) == 2


async def test_request_run_versions_and_priority(pool: Pool) -> None:
    nodes = [shell_node("a"), shell_node("b", ["a"])]
    async with pool.acquire() as conn:
        await add_workflow(
            conn,
            workflow(
                "m", type="manual", nodes=nodes, policy={"weighting": "downward", "priority": 3}
            ),
            publish=False,
        )
        with pytest.raises(Invalid, match="no published version"):
            await intake.request_run(conn, 1, "m", RunRequest(), now=NOW)
        draft = await intake.request_run(
            conn, 1, "m", RunRequest(draft=True, parameters={"x": "1"}), now=NOW
        )
        fast = await intake.request_run(conn, 1, "m", RunRequest(draft=True, priority=8), now=NOW)
        inst = await instance_repo.get(conn, 1, draft.id)
        assert inst.kind == "api" and inst.parameters == {"x": "1"} and inst.priority is None
        assert {(n.name, n.priority, n.weight) for n in inst.nodes} == {("a", 3, 1), ("b", 3, 4)}
        inst = await instance_repo.get(conn, 1, fast.id)
        assert {(n.name, n.priority, n.weight) for n in inst.nodes} == {("a", 8, 1), ("b", 8, 9)}
        assert (
            await conn.fetchval("SELECT queue_priority FROM instances WHERE id = $1", fast.id) == 8
        )


async def test_backfill_instances_ignore_overflow_policy(pool: Pool) -> None:
    async with pool.acquire() as conn:
        wf_id = await add_workflow(
            conn,
            workflow(
                "b", type="manual", policy={"max_parallel_instances": 1, "overflow": "cancel_new"}
            ),
        )
        loaded = await workflow_repo.load_version(conn, wf_id, 1)
        items = [
            instance_repo.NewInstance(version=loaded, kind=kind, cyctime=NOW, run_key=f"{kind}{i}")
            for kind in ("backfill", "api")
            for i in range(3)
        ]
        async with conn.transaction():
            made = await instance_repo.create_instances(conn, items)
    states = [m.state for m in made if m is not None]
    # backfills queue under their own parallelism and, waiting, fill the limit for API runs
    assert states == ["waiting"] * 3 + ["cancelled"] * 3


async def test_dedup_records_expire_after_retention(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    await intake.admit(pool, kafka_event(offset=1))
    await intake.admit(pool, kafka_event(offset=2))
    # backdate one admission past a 30-day retention (moving time by rows, not by sleeping)
    await pool.execute(
        "UPDATE admissions SET created_at = now() - interval '31 days' "
        "WHERE dedup_key LIKE 'orders/0/1#%'"
    )
    assert await event_repo.prune_admissions(pool, 30) == 1
    [again] = await intake.admit(pool, kafka_event(offset=1))
    [still] = await intake.admit(pool, kafka_event(offset=2))
    assert again.outcomes[0].outcome == "admitted"
    assert still.outcomes[0].outcome == "duplicate"


async def test_kafka_offset_key_tells_a_new_record_at_a_reused_offset_apart(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))

    def record(value: str, timestamp_ms: int) -> IncomingEvent:
        event = kafka_event(offset=0, value=value)
        assert event.message is not None
        return event.model_copy(update={"message": {**event.message, "timestamp_ms": timestamp_ms}})

    [first] = await intake.admit(pool, record("a", 1_000))
    [again] = await intake.admit(pool, record("a", 1_000))
    # the topic was recreated: offsets restart at 0 with new records
    [recreated] = await intake.admit(pool, record("b", 2_000))
    assert first.outcomes[0].outcome == "admitted"
    assert again.outcomes[0].outcome == "duplicate"
    assert again.outcomes[0].detail == (
        f"dedup key 'orders/0/0@1000' first admitted by event {first.event_id}"
    )
    assert recreated.outcomes[0].outcome == "admitted"
    assert await count(pool, "SELECT count(*) FROM instances") == 2


async def test_kafka_offset_keys_of_the_old_form_keep_working(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    [old] = await intake.admit(pool, kafka_event(offset=5, value="a"))
    # what an older version stored: the position alone
    await pool.execute("UPDATE admissions SET dedup_key = 'orders/0/5'")
    [redelivered] = await intake.admit(pool, kafka_event(offset=5, value="a"))
    [reused] = await intake.admit(pool, kafka_event(offset=5, value="b"))
    assert redelivered.outcomes[0].outcome == "duplicate"
    assert redelivered.outcomes[0].detail == (
        f"dedup key 'orders/0/5' first admitted by event {old.event_id}"
    )
    assert redelivered.outcomes[0].instance_ids == old.outcomes[0].instance_ids
    assert reused.outcomes[0].outcome == "admitted"
    assert await count(pool, "SELECT count(*) FROM instances") == 2
