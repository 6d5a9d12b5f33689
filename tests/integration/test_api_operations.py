"""Runs, instances, logs, terminate, rerun, workflow status, events, backfill, health.

Attempts and their logs are written here the way the executor writes them (node running under a
lease, an `attempts` row, numbered `attempt_logs` chunks), so the log routes are exercised
without an executor process; tests/e2e/test_api_executor.py runs a real one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.executor.requests import carry_out
from shared import intake
from tests.factories import (
    add_trigger,
    add_workflow,
    kafka_event,
    kafka_trigger,
    shell_node,
    workflow,
)
from tests.support.api import (  # noqa: F401
    ApiServer,
    Pool,
    api_fixture,
    api_server_fixture,
    make_token,
)

WS = "/workspaces/default"


async def published(api: httpx.AsyncClient, name: str = "wf", **kw: Any) -> None:
    spec = {"name": name, "type": "manual", "nodes": [shell_node("a"), shell_node("b", ["a"])]}
    response = await api.put(f"{WS}/workflows/{name}", json={**spec, **kw}, params={"publish": 1})
    assert response.is_success, response.text


async def run(api: httpx.AsyncClient, name: str = "wf", **body: Any) -> int:
    response = await api.post(f"{WS}/workflows/{name}/runs", json=body)
    assert response.status_code == 202, response.text
    return int(response.json()["instance_id"])


async def start_attempt(pool: Pool, instance_id: int, node: str, attempt: int = 1) -> int:
    """What a claim does: the node runs under a lease with a new attempt row."""
    token = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        node_id = await conn.fetchval(
            "UPDATE node_instances SET state = 'running', attempt = $3, lease_token = $4, "
            "started_at = now() WHERE instance_id = $1 AND name = $2 RETURNING id",
            instance_id,
            node,
            attempt,
            token,
        )
        await conn.execute(
            "UPDATE instances SET state = 'running', started_at = now() WHERE id = $1",
            instance_id,
        )
        return int(
            await conn.fetchval(
                "INSERT INTO attempts (node_instance_id, attempt, lease_token, executor) "
                "VALUES ($1, $2, $3, 'test') RETURNING id",
                node_id,
                attempt,
                token,
            )
        )


async def append_log(pool: Pool, attempt_id: int, seq: int, text: str) -> None:
    await pool.execute(
        "INSERT INTO attempt_logs (attempt_id, seq, data) VALUES ($1, $2, $3)",
        attempt_id,
        seq,
        text,
    )


async def end_attempt(pool: Pool, attempt_id: int, state: str = "succeeded") -> None:
    async with pool.acquire() as conn, conn.transaction():
        node_id = await conn.fetchval(
            "UPDATE attempts SET state = $2, finished_at = now(), exit_code = $3 "
            "WHERE id = $1 RETURNING node_instance_id",
            attempt_id,
            state,
            0 if state == "succeeded" else 1,
        )
        await conn.execute(
            "UPDATE node_instances SET state = $2, finished_at = now() WHERE id = $1",
            node_id,
            state,
        )


async def carried_out(pool: Pool) -> list[str]:
    """What an executor's requests loop does: carry out every pending request."""
    async with pool.acquire() as conn:
        return [o.state for o in await carry_out(conn)]


def error_of(response: httpx.Response) -> dict[str, Any]:
    info: dict[str, Any] = response.json()["error"]
    return info


# ------------------------------------------------------------------------------------- runs


async def test_run_carries_message_parameters_priority_and_bizdate(api: httpx.AsyncClient) -> None:
    await published(api)
    message = {"data": {"s3": {"object": {"key": "input/a.csv"}}}}
    iid = await run(
        api,
        trigger_message=message,
        parameters={"region": "eu"},
        priority=7,
        bizdate="2026-11-20",
        kind="manual",
    )
    detail = (await api.get(f"{WS}/instances/{iid}")).json()
    assert detail["kind"] == "manual" and detail["state"] == "waiting"
    assert detail["trigger_message"] == message
    assert detail["parameters"] == {"region": "eu"}
    assert (detail["priority"], detail["bizdate"], detail["version"]) == (7, "2026-11-20", 1)
    assert [(n["name"], n["state"], n["priority"]) for n in detail["nodes"]] == [
        ("a", "pending", 7),
        ("b", "pending", 7),
    ]
    assert detail["reason"] is None and detail["rerun_of"] is None
    default_kind = (await api.get(f"{WS}/instances/{await run(api)}")).json()["kind"]
    assert default_kind == "api"


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({}, 422, "version", "has no published version"),
        ({"version": 9}, 404, None, "version 9 not found"),
        ({"priority": 2}, 422, "priority", "priority must be one of"),
        ({"draft": True, "bogus": 1}, 422, "bogus", "Extra inputs"),
        ({"kind": "scheduled"}, 422, "kind", "Input should be"),
    ],
)
async def test_run_errors(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, field: str | None, message: str
) -> None:
    spec = {"name": "draft_only", "type": "manual", "nodes": [shell_node("a")]}
    await api.post(f"{WS}/workflows", json=spec)
    response = await api.post(f"{WS}/workflows/draft_only/runs", json=body)
    assert response.status_code == status
    assert error_of(response).get("field") == field
    assert message in error_of(response)["message"]


async def test_draft_and_explicit_version_runs(api: httpx.AsyncClient) -> None:
    spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
    await api.post(f"{WS}/workflows", json=spec)
    await api.put(f"{WS}/workflows/wf", json={**spec, "nodes": [shell_node("a"), shell_node("z")]})
    draft = await run(api, draft=True)
    first = await run(api, version=1)
    assert (await api.get(f"{WS}/instances/{draft}")).json()["version"] == 2
    assert len((await api.get(f"{WS}/instances/{first}")).json()["nodes"]) == 1
    missing = await api.post(f"{WS}/workflows/nope/runs", json={})
    assert missing.status_code == 404
    assert error_of(missing)["message"] == "workflow 'nope' not found"


# -------------------------------------------------------------------------------- instances


async def test_instance_list_filters_and_pages(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api, "wf")
    await published(api, "other")
    ids = [await run(api, "wf") for _ in range(4)]
    other = await run(api, "other", kind="manual")
    await pool.execute("UPDATE instances SET state = 'failed' WHERE id = $1", ids[0])

    async def listed(**params: Any) -> list[int]:
        page = (await api.get(f"{WS}/instances", params=params)).json()
        return [i["id"] for i in page["items"]]

    assert await listed() == [other, *reversed(ids)]
    assert await listed(workflow="wf") == list(reversed(ids))
    assert await listed(state="failed") == [ids[0]]
    assert await listed(state=["failed", "waiting"], workflow="other") == [other]
    assert await listed(kind="manual") == [other]
    assert await listed(workflow="nope") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await listed(since=future) == []

    seen: list[int] = []
    cursor = None
    while True:
        page = (await api.get(f"{WS}/instances", params={"limit": 2, "cursor": cursor})).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [other, *reversed(ids)]
    summary = (await api.get(f"{WS}/instances", params={"workflow": "other"})).json()["items"][0]
    assert summary["node_states"] == {"pending": 2}
    assert summary["workflow"] == "other" and summary["kind"] == "manual"


async def test_cursor_of_another_list_is_rejected(api: httpx.AsyncClient) -> None:
    for name in ("a_t", "b_t"):
        await api.post(f"{WS}/triggers", json={"name": name, "type": "kafka", "topic": "x"})
    name_cursor = (await api.get(f"{WS}/triggers", params={"limit": 1})).json()["next_cursor"]
    response = await api.get(f"{WS}/instances", params={"cursor": name_cursor})
    assert response.status_code == 422 and error_of(response)["field"] == "cursor"


async def test_instance_detail_shows_every_attempt(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    first = await start_attempt(pool, iid, "a", 1)
    await end_attempt(pool, first, "failed")
    await start_attempt(pool, iid, "a", 2)
    detail = (await api.get(f"{WS}/instances/{iid}")).json()
    node_a = detail["nodes"][0]
    assert node_a["state"] == "running"
    assert [(a["attempt"], a["state"], a["exit_code"]) for a in node_a["attempts"]] == [
        (1, "failed", 1),
        (2, "running", None),
    ]
    assert detail["nodes"][1]["attempts"] == []


# ------------------------------------------------------------------------------------- logs


async def test_log_reads_the_latest_or_a_given_attempt(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    one = await start_attempt(pool, iid, "a", 1)
    await append_log(pool, one, 1, "first try\n")
    await end_attempt(pool, one, "failed")
    two = await start_attempt(pool, iid, "a", 2)
    await append_log(pool, two, 1, "second ")
    await append_log(pool, two, 2, "try\n")
    path = f"{WS}/instances/{iid}/nodes/a/log"

    latest = await api.get(path)
    assert latest.status_code == 200 and latest.text == "second try\n"
    assert latest.headers["content-type"].startswith("text/plain")
    assert latest.headers["x-sluice-attempt"] == "2"
    assert latest.headers["x-sluice-last-seq"] == "2"
    assert latest.headers["x-sluice-finished"] == "false"
    tail = await api.get(path, params={"after_seq": 1})
    assert tail.text == "try\n"
    older = await api.get(path, params={"attempt": 1})
    assert older.text == "first try\n" and older.headers["x-sluice-finished"] == "true"
    not_started = await api.get(f"{WS}/instances/{iid}/nodes/b/log")
    assert not_started.text == "" and not_started.headers["x-sluice-finished"] == "false"


@pytest.mark.parametrize(
    ("suffix", "params", "message"),
    [
        ("/nodes/zz/log", {}, "node 'zz' not found in instance {iid}"),
        ("/nodes/a/log", {"attempt": 3}, "attempt 3 of node 'a' not found"),
        ("/nodes/a/log", {"attempt": 3, "follow": True}, "attempt 3 of node 'a' not found"),
    ],
)
async def test_log_of_something_missing_is_404(
    api: httpx.AsyncClient, pool: Pool, suffix: str, params: dict[str, Any], message: str
) -> None:
    await published(api)
    iid = await run(api)
    await start_attempt(pool, iid, "a", 1)
    response = await api.get(f"{WS}/instances/{iid}{suffix}", params=params)
    assert response.status_code == 404
    assert error_of(response)["message"] == message.format(iid=iid)
    unknown = await api.get(f"{WS}/instances/{iid + 100}{suffix}", params=params)
    assert error_of(unknown)["message"] == f"instance {iid + 100} not found"


async def test_follow_streams_until_the_attempt_ends(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    attempt = await start_attempt(pool, iid, "a")
    await append_log(pool, attempt, 1, "line 1\n")
    path = f"{WS}/instances/{iid}/nodes/a/log"
    async with api.stream("GET", path, params={"follow": True}) as response:
        assert response.status_code == 200
        assert response.headers["x-sluice-attempt"] == "1"
        chunks = response.aiter_text()
        first = await anext(chunks)
        # The stream is open and has delivered what exists; now the attempt writes and ends.
        await append_log(pool, attempt, 2, "line 2\n")
        await end_attempt(pool, attempt)
        rest = "".join([c async for c in chunks])
    assert first + rest == "line 1\nline 2\n"


async def test_follow_waits_for_the_first_attempt(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    path = f"{WS}/instances/{iid}/nodes/a/log"
    async with api.stream("GET", path, params={"follow": True}) as response:
        assert response.status_code == 200
        attempt = await start_attempt(pool, iid, "a")
        await append_log(pool, attempt, 1, "started late\n")
        await end_attempt(pool, attempt)
        text = "".join([c async for c in response.aiter_text()])
    assert text == "started late\n"


async def test_follow_ends_at_once_for_a_node_that_will_never_run(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    iid = await run(api)
    assert (await api.post(f"{WS}/instances/{iid}/terminate")).status_code == 202
    assert await carried_out(pool) == ["done"]
    response = await api.get(f"{WS}/instances/{iid}/nodes/b/log", params={"follow": True})
    assert response.status_code == 200 and response.text == ""


# ------------------------------------------------------------------------ terminate / rerun


async def test_terminate_then_rerun_failed(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    ok = await start_attempt(pool, iid, "a")
    await end_attempt(pool, ok)
    asked = await api.post(f"{WS}/instances/{iid}/terminate")
    assert asked.status_code == 202
    request = asked.json()
    assert request["instance_id"] == iid and request["action"] == "terminate"
    assert (request["state"], request["instance_state"]) == ("pending", "running")
    assert request["requested_by"] and request["requested_at"] and request["finished_at"] is None
    # The API only recorded it: nothing changed until an executor carries it out.
    detail = (await api.get(f"{WS}/instances/{iid}")).json()
    assert detail["state"] == "running"
    assert await carried_out(pool) == ["done"]
    shown = (await api.get(f"{WS}/instances/{iid}/requests/{request['id']}")).json()
    assert (shown["state"], shown["reason"]) == ("done", None)
    assert shown["instance_state"] == "terminated"
    assert shown["finished_at"] is not None
    detail = (await api.get(f"{WS}/instances/{iid}")).json()
    assert [(n["name"], n["state"]) for n in detail["nodes"]] == [
        ("a", "succeeded"),
        ("b", "terminated"),
    ]
    again = await api.post(f"{WS}/instances/{iid}/terminate")
    assert again.status_code == 409 and "already ended" in error_of(again)["message"]

    rerun = await api.post(f"{WS}/instances/{iid}/rerun", json={"mode": "failed"})
    assert rerun.status_code == 202
    assert (rerun.json()["state"], rerun.json()["mode"]) == ("pending", "failed")
    assert await carried_out(pool) == ["done"]
    shown = (await api.get(f"{WS}/instances/{iid}/requests/{rerun.json()['id']}")).json()
    assert (shown["state"], shown["instance_state"]) == ("done", "waiting")
    detail = (await api.get(f"{WS}/instances/{iid}")).json()
    states = {n["name"]: n["state"] for n in detail["nodes"]}
    assert states["a"] == "succeeded" and states["b"] != "terminated"
    assert detail["nodes"][0]["attempts"][0]["state"] == "succeeded"  # history kept
    busy = await api.post(f"{WS}/instances/{iid}/rerun", json={"mode": "all"})
    assert busy.status_code == 409


async def test_a_duplicate_request_while_pending_is_the_same_request(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    iid = await run(api)
    first = await api.post(f"{WS}/instances/{iid}/terminate")
    second = await api.post(f"{WS}/instances/{iid}/terminate")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert await carried_out(pool) == ["done"]
    count = "SELECT count(*) FROM instance_requests WHERE instance_id = $1"
    assert await pool.fetchval(count, iid) == 1
    reruns = [await api.post(f"{WS}/instances/{iid}/rerun", json={"mode": "all"}) for _ in "ab"]
    assert reruns[0].json()["id"] == reruns[1].json()["id"]
    assert await carried_out(pool) == ["done"]


async def test_a_request_the_instance_outran_fails_with_the_reason(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    iid = await run(api)
    asked = (await api.post(f"{WS}/instances/{iid}/terminate")).json()
    # The instance ends on its own before an executor gets to the request.
    await pool.execute(
        "UPDATE instances SET state = 'succeeded', finished_at = now() WHERE id = $1", iid
    )
    assert await carried_out(pool) == ["failed"]
    shown = (await api.get(f"{WS}/instances/{iid}/requests/{asked['id']}")).json()
    assert shown["state"] == "failed" and "already ended (succeeded)" in shown["reason"]
    assert shown["instance_state"] == "succeeded"


async def test_requests_of_another_workspace_are_not_found(
    api: httpx.AsyncClient, api_server: ApiServer, pool: Pool
) -> None:
    await published(api)
    iid = await run(api)
    asked = (await api.post(f"{WS}/instances/{iid}/terminate")).json()
    other = "/workspaces/other"
    async with api_server.client(await make_token(pool, "other", "operator")) as outsider:
        for response in (
            await outsider.post(f"{other}/instances/{iid}/terminate"),
            await outsider.post(f"{other}/instances/{iid}/rerun", json={"mode": "all"}),
            await outsider.get(f"{other}/instances/{iid}/requests/{asked['id']}"),
        ):
            assert response.status_code == 404, response.text
    missing = await api.get(f"{WS}/instances/{iid}/requests/{asked['id'] + 1}")
    assert missing.status_code == 404
    assert await pool.fetchval("SELECT count(*) FROM instance_requests") == 1


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/instances/999/terminate", None, 404),
        ("/instances/999/rerun", {"mode": "all"}, 404),
        ("/instances/{iid}/rerun", {"mode": "some"}, 422),
    ],
)
async def test_terminate_and_rerun_errors(
    api: httpx.AsyncClient, path: str, body: Any, status: int
) -> None:
    await published(api)
    iid = await run(api)
    response = await api.post(f"{WS}{path.format(iid=iid)}", json=body)
    assert response.status_code == status


async def test_rerun_without_body_reruns_everything(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    iid = await run(api)
    await api.post(f"{WS}/instances/{iid}/terminate")
    await carried_out(pool)
    response = await api.post(f"{WS}/instances/{iid}/rerun")
    assert response.status_code == 202 and response.json()["mode"] == "all"
    assert await carried_out(pool) == ["done"]


# ----------------------------------------------------------------------------------- status


async def test_workflow_status_aggregates(api: httpx.AsyncClient, pool: Pool) -> None:
    await published(api)
    ids = [await run(api) for _ in range(3)]
    await api.post(f"{WS}/instances/{ids[0]}/terminate")
    await carried_out(pool)
    attempt = await start_attempt(pool, ids[1], "a")
    status = (await api.get(f"{WS}/workflows/wf/status")).json()
    assert status["instances"] == {
        "waiting": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "terminated": 1,
        "cancelled": 0,
    }
    assert status["nodes"] == {"ready": 0, "running": 1}
    assert status["last_instance"]["id"] == ids[2]
    assert (status["published_version"], status["frozen"]) == (1, False)
    await end_attempt(pool, attempt)
    await pool.execute(
        "UPDATE instances SET state = 'succeeded', finished_at = now() WHERE id = $1", ids[1]
    )
    status = (await api.get(f"{WS}/workflows/wf/status")).json()
    assert status["last_succeeded_at"] is not None and status["last_failed_at"] is None
    missing = await api.get(f"{WS}/workflows/nope/status")
    assert missing.status_code == 404


# ----------------------------------------------------------------------------------- events


async def test_events_explain_what_each_trigger_did(api: httpx.AsyncClient, pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_trigger(
            conn, kafka_trigger("logins", "orders", filter="value.action_type == 'x'")
        )
        await add_workflow(conn, workflow("wf", trigger="kt"))
    [first] = await intake.admit(pool, kafka_event(topic="orders", offset=5))
    [dup] = await intake.admit(pool, kafka_event(topic="orders", offset=5))
    [nobody] = await intake.admit(pool, kafka_event(topic="unwatched", offset=1))

    events = (await api.get(f"{WS}/events")).json()["items"]
    assert [e["id"] for e in events] == [nobody.event_id, dup.event_id, first.event_id]
    assert [(o["trigger"], o["outcome"]) for o in events[0]["outcomes"]] == [(None, "no_trigger")]
    outcomes = {o["trigger"]: o for o in events[2]["outcomes"]}
    assert outcomes["kt"]["outcome"] == "admitted"
    assert outcomes["kt"]["instance_ids"] == first.instance_ids
    assert outcomes["logins"]["outcome"] == "filtered"
    dup_outcome = next(o for o in events[1]["outcomes"] if o["trigger"] == "kt")
    assert dup_outcome["outcome"] == "duplicate"
    assert dup_outcome["instance_ids"] == first.instance_ids

    by_outcome = (await api.get(f"{WS}/events", params={"outcome": "duplicate"})).json()
    assert [e["id"] for e in by_outcome["items"]] == [dup.event_id]
    by_trigger = (await api.get(f"{WS}/events", params={"trigger": "nope"})).json()
    assert by_trigger["items"] == []
    page = (await api.get(f"{WS}/events", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await api.get(f"{WS}/events", params={"cursor": page["next_cursor"]})).json()
    assert [e["id"] for e in rest["items"]] == [first.event_id]
    assert rest["next_cursor"] is None

    detail = (await api.get(f"{WS}/events/{first.event_id}")).json()
    assert detail["payload"]["topic"] == "orders" and detail["ref"] == "orders/0/5"
    assert (await api.get(f"{WS}/events/{first.event_id + 100}")).status_code == 404
    instance = (await api.get(f"{WS}/instances/{first.instance_ids[0]}")).json()
    assert (instance["kind"], instance["event_id"]) == ("triggered", first.event_id)
    bad = await api.get(f"{WS}/events", params={"outcome": "exploded"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "outcome"


# --------------------------------------------------------------------------------- backfill


async def test_backfill_creates_one_instance_per_fire_time(api: httpx.AsyncClient) -> None:
    spec = {
        "name": "daily",
        "type": "scheduled",
        "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
        "nodes": [shell_node("a")],
    }
    await api.put(f"{WS}/workflows/daily", json=spec, params={"publish": True})
    body = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-03T23:00:00Z", "parallelism": 2}
    response = await api.post(f"{WS}/workflows/daily/backfill", json=body)
    assert response.status_code == 202, response.text
    out = response.json()
    assert len(out["instance_ids"]) == 3 and out["parallelism"] == 2
    listed = (await api.get(f"{WS}/instances", params={"backfill": out["id"]})).json()["items"]
    assert sorted(i["id"] for i in listed) == sorted(out["instance_ids"])
    assert {(i["kind"], i["backfill_id"]) for i in listed} == {("backfill", out["id"])}
    naive = await api.post(
        f"{WS}/workflows/daily/backfill", json={"start": "2026-11-01T00:00:00", "end": body["end"]}
    )
    assert naive.status_code == 422 and error_of(naive)["field"] == "start"


async def test_backfill_of_an_unpublished_workflow_is_refused(api: httpx.AsyncClient) -> None:
    await api.post(
        f"{WS}/workflows", json={"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
    )
    body = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}
    response = await api.post(f"{WS}/workflows/wf/backfill", json=body)
    assert response.status_code == 422
    assert "no published version" in error_of(response)["message"]


# ----------------------------------------------------------------------------------- health


async def test_health_readiness_and_metrics(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    await run(api)
    await run(api)
    async with httpx.AsyncClient(base_url=api_server.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "migrations": "current"}
        await client.get("/api/v1/workspaces/default/workflows", headers={"Authorization": "x"})
        metrics = (await client.get("/metrics")).text
        assert "sluice_api_requests_total{" in metrics
        assert 'route="/api/v1/workspaces/{ws}/workflows",status="401"' in metrics
        assert "sluice_events_received_total" in metrics
        assert 'sluice_instances{state="waiting"} 2.0' in metrics
        assert 'sluice_instances{state="running"} 0.0' in metrics
        newest = await pool.fetchval("SELECT max(version) FROM schema_migrations")
        await pool.execute("DELETE FROM schema_migrations WHERE version = $1", newest)
        pending = await client.get("/readyz")
        assert pending.status_code == 503
        assert pending.json()["status"] == "not_ready"
        assert pending.json()["checks"]["migrations"].startswith("pending")


async def test_a_lost_database_is_503_not_500(api_server: ApiServer) -> None:
    assert api_server.app is not None
    await api_server.app.state.pool.close()
    async with api_server.client() as client:
        response = await client.get(f"{WS}/workflows")
        assert response.status_code == 503
        assert error_of(response)["code"] == "unavailable"
        ready = await client.get(api_server.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")
