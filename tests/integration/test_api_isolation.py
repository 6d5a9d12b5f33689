"""A workspace is a tenant: the API shows one workspace nothing of another's events, instances,
logs (with their outputs) or connections; events that matched no trigger are for platform admins
(admins of `default`) only."""

from __future__ import annotations

import uuid

import httpx

from shared import intake
from shared.db import connections as connection_repo
from shared.db import workspaces as workspace_repo
from shared.db.connections import ConnectionSpec
from shared.models.events import IncomingEvent
from shared.models.instances import RunRequest
from tests.factories import NOW, add_trigger, add_workflow, kafka_event, kafka_trigger, workflow
from tests.support.api import ApiServer, Pool, make_token
from tests.support.secrets import suite_box

LOG_LINE = "tenant-a private log line with its outputs"
OUTPUT = "tenant-a private output value"


async def ids(client: httpx.AsyncClient, path: str) -> list[int]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_events_no_trigger_matched_are_for_platform_admins_only(
    api_server: ApiServer, pool: Pool
) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", "orders"))
    [own] = await intake.admit(pool, kafka_event(topic="orders", offset=1))
    [unmatched] = await intake.admit(pool, kafka_event(topic="someone-elses-topic", offset=7))
    invalid = IncomingEvent(
        source="kafka",
        subject="another-topic",
        ref="another-topic/0/1",
        error="value is not JSON",
        raw="secret payload of another tenant",
        received_at=NOW,
    )
    [broken] = await intake.admit(pool, invalid)
    hidden = {unmatched.event_id, broken.event_id}
    for role in ("viewer", "operator", "developer"):
        token = await make_token(pool, "default", role)
        async with api_server.client(token) as client:
            assert await ids(client, "/workspaces/default/events") == [own.event_id], role
            for event_id in hidden:
                response = await client.get(f"/workspaces/default/events/{event_id}")
                assert response.status_code == 404, (role, response.text)
            assert (
                await client.get(f"/workspaces/default/events/{own.event_id}")
            ).status_code == 200
    # An admin of another workspace sees nothing of them either.
    await workspace_repo.create(pool, "team")
    async with api_server.client(await make_token(pool, "team", "admin")) as client:
        assert await ids(client, "/workspaces/team/events") == []
        response = await client.get(f"/workspaces/team/events/{unmatched.event_id}")
        assert response.status_code == 404
    # The platform admin sees the audit of every event, with why it did not start a run.
    async with api_server.client() as admin:
        listed = (await admin.get("/workspaces/default/events")).json()["items"]
        assert [e["id"] for e in listed] == [broken.event_id, unmatched.event_id, own.event_id]
        outcomes = {e["id"]: [o["outcome"] for o in e["outcomes"]] for e in listed}
        assert outcomes[unmatched.event_id] == ["no_trigger"]
        assert outcomes[broken.event_id] == ["invalid"]
        one = await admin.get(f"/workspaces/default/events/{unmatched.event_id}")
        assert one.status_code == 200


async def seed_tenant(pool: Pool, name: str) -> dict[str, int]:
    """A workspace with a trigger, a workflow, a matched event, an instance with a logged
    attempt and a connection with a secret."""
    ws = await workspace_repo.create(pool, name)
    topic = f"{name}-orders"
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("kt", topic), workspace_id=ws.id)
        await add_workflow(conn, workflow("wf", trigger="kt"), workspace_id=ws.id)
        await add_workflow(conn, workflow("manual", type="manual"), workspace_id=ws.id)
        await connection_repo.upsert(
            conn,
            ws.id,
            ConnectionSpec(name="db", kind="postgres", secrets={"password": f"pw-{name}"}),
            suite_box(),
        )
        run = await intake.request_run(conn, ws.id, "manual", RunRequest(), now=NOW)
        node = await conn.fetchval(
            "SELECT id FROM node_instances WHERE instance_id = $1 LIMIT 1", run.id
        )
        attempt = await conn.fetchval(
            "INSERT INTO attempts (node_instance_id, attempt, lease_token, state, finished_at, "
            "outputs) VALUES ($1, 1, $2, 'succeeded', now(), $3::jsonb) RETURNING id",
            node,
            uuid.uuid4(),
            {"secret_rows": f"{OUTPUT} of {name}"},
        )
        await conn.execute(
            "INSERT INTO attempt_logs (attempt_id, seq, data) VALUES ($1, 1, $2)",
            attempt,
            f"{LOG_LINE} of {name}\n",
        )
    [event] = await intake.admit(pool, kafka_event(topic=topic, offset=1))
    return {"ws": ws.id, "event": event.event_id, "instance": run.id}


async def test_one_workspace_reads_nothing_of_another(api_server: ApiServer, pool: Pool) -> None:
    a = await seed_tenant(pool, "team_a")
    b = await seed_tenant(pool, "team_b")
    node = "a"
    async with api_server.client(await make_token(pool, "team_a", "viewer")) as mine:
        # The tenant itself reads its own objects (so the refusals below are about tenancy).
        assert (await mine.get(f"/workspaces/team_a/events/{a['event']}")).status_code == 200
        log = await mine.get(f"/workspaces/team_a/instances/{a['instance']}/nodes/{node}/log")
        assert log.status_code == 200 and f"{LOG_LINE} of team_a" in log.text
        outputs = await mine.get(
            f"/workspaces/team_a/instances/{a['instance']}/nodes/{node}/outputs"
        )
        assert outputs.status_code == 200 and f"{OUTPUT} of team_a" in outputs.text
    async with api_server.client(await make_token(pool, "team_b", "admin")) as other:
        # Another workspace's paths: forbidden outright.
        for path in (
            "/workspaces/team_a/events",
            f"/workspaces/team_a/events/{a['event']}",
            "/workspaces/team_a/instances",
            f"/workspaces/team_a/instances/{a['instance']}",
            f"/workspaces/team_a/instances/{a['instance']}/nodes/{node}/log",
            f"/workspaces/team_a/instances/{a['instance']}/nodes/{node}/outputs",
            "/workspaces/team_a/connections",
            "/workspaces/team_a/connections/db",
        ):
            response = await other.get(path)
            assert response.status_code == 403, (path, response.text)
        # Its own paths with the other tenant's ids: not found, never the other's data.
        for path in (
            f"/workspaces/team_b/events/{a['event']}",
            f"/workspaces/team_b/instances/{a['instance']}",
            f"/workspaces/team_b/instances/{a['instance']}/nodes/{node}/log",
            f"/workspaces/team_b/instances/{a['instance']}/nodes/{node}/outputs",
        ):
            response = await other.get(path)
            assert response.status_code == 404, (path, response.text)
            assert "team_a" not in response.text and LOG_LINE not in response.text
            assert OUTPUT not in response.text
        assert await ids(other, "/workspaces/team_b/events") == [b["event"]]
        theirs = {
            r["id"]
            for r in await pool.fetch("SELECT id FROM instances WHERE workspace_id = $1", a["ws"])
        }
        listed = await ids(other, "/workspaces/team_b/instances")
        assert b["instance"] in listed and not theirs & set(listed)
        log = await other.get(f"/workspaces/team_b/instances/{b['instance']}/nodes/{node}/log")
        assert f"{LOG_LINE} of team_b" in log.text and "team_a" not in log.text
        connections = (await other.get("/workspaces/team_b/connections")).json()["items"]
        assert [c["name"] for c in connections] == ["db"]
        assert "pw-" not in str(connections)
