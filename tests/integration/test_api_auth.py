"""Authentication and authorization: every role on every route, and workspace isolation.

Roles are ordered viewer < operator < developer < admin (docs/api.md). Each role walks the whole
table of mutating routes in order against the same seeded database: a role below a route's
minimum gets 403 and changes nothing, a role at or above it gets the route's success status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from shared import intake
from shared.db import connections as connection_repo
from shared.db import notifications as notification_repo
from shared.db import replays as replay_repo
from shared.db import triggers as trigger_repo
from shared.db.connections import ConnectionSpec
from shared.db.tokens import Role
from shared.models.instances import RunRequest
from shared.models.notifications import NotifyRule
from shared.models.replays import ReplayRequest
from shared.operations import requests as instance_requests
from shared.settings import load_settings
from tests.factories import (
    NOW,
    add_trigger,
    add_workflow,
    kafka_event,
    kafka_trigger,
    shell_node,
    workflow,
)
from tests.support.api import ApiServer, Pool, make_token
from tests.support.secrets import suite_box

ROLES = ("viewer", "operator", "developer", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template under /api/v1, with {ws} and seed placeholders
    min_role: str
    ok: int
    body: Any = None
    query: dict[str, Any] | None = None
    root_only: bool = False  # needs an admin of workspace `default`


MANUAL = {"name": "wf_new", "type": "manual", "nodes": [shell_node("a")]}
REPLAY_BODY = {"from": {"0": 0}, "to": {"0": 5}}
MUTATING: tuple[Route, ...] = (
    Route("POST", "/workspaces", "admin", 201, {"name": "made_here"}, root_only=True),
    Route("PUT", "/workspaces/{ws}", "admin", 200, {"parameters": {"k": "v"}}),
    Route("GET", "/workspaces/{ws}/tokens", "admin", 200),
    Route("POST", "/workspaces/{ws}/tokens", "admin", 201, {"name": "x", "role": "viewer"}),
    Route("DELETE", "/workspaces/{ws}/tokens/{victim_token}", "admin", 204),
    Route("POST", "/workspaces/{ws}/connections", "admin", 201, {"name": "c2", "kind": "s3"}),
    Route(
        "PUT",
        "/workspaces/{ws}/connections/seed_c",
        "admin",
        200,
        {"name": "seed_c", "kind": "postgres", "secrets": {"password": "p"}},
    ),
    Route("DELETE", "/workspaces/{ws}/connections/seed_c", "admin", 204),
    Route(
        "POST",
        "/workspaces/{ws}/triggers",
        "developer",
        201,
        {"name": "t_new", "type": "kafka", "topic": "x"},
    ),
    Route(
        "PUT",
        "/workspaces/{ws}/triggers/seed_t",
        "developer",
        200,
        {"name": "seed_t", "type": "kafka", "topic": "orders", "enabled": False},
    ),
    Route("DELETE", "/workspaces/{ws}/triggers/t_new", "developer", 204),
    Route("POST", "/workspaces/{ws}/workflows", "developer", 201, MANUAL),
    Route(
        "PUT",
        "/workspaces/{ws}/workflows/seed_m",
        "developer",
        200,
        {"name": "seed_m", "type": "manual", "nodes": [shell_node("a", code="echo 2")]},
    ),
    Route("POST", "/workspaces/{ws}/workflows/seed_m/publish", "developer", 200),
    Route("POST", "/workspaces/{ws}/workflows/seed_m/revert", "developer", 200, {"version": 1}),
    Route("POST", "/workspaces/{ws}/workflows/seed_m/clone", "developer", 201, {"name": "cl"}),
    Route("POST", "/workspaces/{ws}/workflows/seed_m/freeze", "operator", 200),
    Route("POST", "/workspaces/{ws}/workflows/seed_m/unfreeze", "operator", 200),
    Route(
        "POST",
        "/workspaces/{ws}/workflows/seed_m/runs",
        "operator",
        202,
        {"trigger_message": {"k": 1}, "parameters": {"p": "v"}},
    ),
    Route(
        "POST",
        "/workspaces/{ws}/workflows/seed_m/backfill",
        "operator",
        202,
        {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
    ),
    Route(
        "POST",
        "/workspaces/{ws}/backfills",
        "operator",
        202,
        {
            "workflows": ["seed_m"],
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-11-02T00:00:00Z",
        },
    ),
    Route("POST", "/workspaces/{ws}/instances/{waiting}/terminate", "operator", 202),
    Route("POST", "/workspaces/{ws}/instances/{ended}/rerun", "operator", 202, {"mode": "failed"}),
    Route("DELETE", "/workspaces/{ws}/workflows/wf_new", "developer", 204),
    Route(
        "POST",
        "/workspaces/{ws}/notifications/test",
        "developer",
        202,
        {"rule": {"on": ["failure"], "channel": "webhook", "url": "https://hooks.example.com/x"}},
    ),
    Route("POST", "/workspaces/{ws}/triggers/seed_t/replay", "operator", 202, REPLAY_BODY),
)
HOOK_RULE = NotifyRule(on=["failure"], channel="webhook", url="https://hooks.example.com/x")
READS: tuple[Route, ...] = tuple(
    Route("GET", path, "viewer", 200, query=query)
    for path, query in (
        ("/workspaces/{ws}", None),
        ("/workspaces/{ws}/connections", None),
        ("/workspaces/{ws}/connections/seed_c", None),
        ("/workspaces/{ws}/triggers", None),
        ("/workspaces/{ws}/triggers/seed_t", None),
        ("/workspaces/{ws}/workflows", None),
        ("/workspaces/{ws}/workflows/seed_m", None),
        ("/workspaces/{ws}/workflows/seed_m/versions", None),
        ("/workspaces/{ws}/workflows/seed_m/versions/1", None),
        ("/workspaces/{ws}/workflows/seed_m/versions/1/diff/1", None),
        ("/workspaces/{ws}/workflows/seed_m/status", None),
        ("/workspaces/{ws}/instances", {"workflow": "seed_m"}),
        ("/workspaces/{ws}/instances/{waiting}", None),
        ("/workspaces/{ws}/instances/{waiting}/nodes/a/log", None),
        ("/workspaces/{ws}/instances/{waiting}/nodes/a/outputs", None),
        ("/workspaces/{ws}/instances/{ended}/requests/{request}", None),
        ("/workspaces/{ws}/events", {"trigger": "seed_t"}),
        ("/workspaces/{ws}/events/{event}", None),
        ("/workspaces/{ws}/notifications", None),
        ("/workspaces/{ws}/notifications/{notification}", None),
        ("/workspaces/{ws}/replays", {"trigger": "seed_t"}),
        ("/workspaces/{ws}/replays/{replay}", None),
    )
)


@dataclass(frozen=True)
class Seed:
    waiting: int
    ended: int
    victim_token: int
    event: int
    notification: int
    request: int
    replay: int

    def fill(self, template: str, ws: str = "default") -> str:
        return template.format(
            ws=ws,
            waiting=self.waiting,
            ended=self.ended,
            victim_token=self.victim_token,
            event=self.event,
            notification=self.notification,
            request=self.request,
            replay=self.replay,
        )


async def seed(pool: Pool) -> Seed:
    """Objects every route of the tables finds: triggers, workflows, instances, an event."""
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("seed_t", "orders"))
        await add_workflow(conn, workflow("seed_wf", trigger="seed_t"))
        await add_workflow(conn, workflow("seed_m", type="manual"))
        await connection_repo.upsert(
            conn, 1, ConnectionSpec(name="seed_c", kind="postgres"), suite_box()
        )
        waiting = await intake.request_run(conn, 1, "seed_m", RunRequest(), now=NOW)
        ended = await intake.request_run(conn, 1, "seed_m", RunRequest(), now=NOW)
        # An instance that ended in failure, as the executor would leave it.
        await conn.execute(
            "UPDATE instances SET state = 'failed', finished_at = now() WHERE id = $1", ended.id
        )
        await conn.execute(
            "UPDATE node_instances SET state = 'failed', finished_at = now() "
            "WHERE instance_id = $1",
            ended.id,
        )
        victim = await conn.fetchval(
            "INSERT INTO tokens (workspace_id, name, role, token_hash) "
            "VALUES (1, 'victim', 'viewer', '\\x00') RETURNING id"
        )
        notification = await notification_repo.enqueue_test(conn, 1, HOOK_RULE)
        asked = await instance_requests.request(conn, 1, ended.id, "rerun", mode="failed")
    [result] = await intake.admit(pool, kafka_event(topic="orders", offset=1))
    trigger = await trigger_repo.get(pool, 1, "seed_t")
    replay = await replay_repo.create(
        pool, 1, trigger.id, "seed_t", "kafka", ReplayRequest.model_validate(REPLAY_BODY), 10
    )
    return Seed(
        waiting.id,
        ended.id,
        int(victim),
        result.event_id,
        notification,
        asked.id,
        replay.replay_id,
    )


async def call(client: httpx.AsyncClient, route: Route, seeded: Seed, ws: str) -> httpx.Response:
    return await client.request(
        route.method, seeded.fill(route.path, ws), json=route.body, params=route.query
    )


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_on_each_mutating_route(
    role: Role, api_server: ApiServer, pool: Pool
) -> None:
    seeded = await seed(pool)
    token = await make_token(pool, "default", role)
    outcomes = []
    async with api_server.client(token) as client:
        for route in MUTATING:
            response = await call(client, route, seeded, "default")
            allowed = RANK[role] >= RANK[route.min_role]
            expected = route.ok if allowed else 403
            outcomes.append((route.method, route.path, response.status_code, expected))
            if not allowed:
                assert response.json()["error"]["code"] == "forbidden"
    wrong = [o for o in outcomes if o[2] != o[3]]
    assert not wrong, f"role {role}: (method, path, got, expected): {wrong}"


@pytest.mark.parametrize("role", ROLES)
async def test_every_role_reads_everything(role: Role, api_server: ApiServer, pool: Pool) -> None:
    seeded = await seed(pool)
    token = await make_token(pool, "default", role)
    async with api_server.client(token) as client:
        statuses = {r.path: (await call(client, r, seeded, "default")).status_code for r in READS}
    assert statuses == {r.path: 200 for r in READS}


async def test_forbidden_calls_change_nothing(api_server: ApiServer, pool: Pool) -> None:
    seeded = await seed(pool)
    token = await make_token(pool, "default", "viewer")
    tables = (
        "workspaces",
        "tokens",
        "connections",
        "triggers",
        "workflows",
        "instances",
        "instance_requests",
    )

    async def snapshot() -> dict[str, Any]:
        return {
            t: [dict(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY id")]
            for t in tables
            if t != "tokens"
        } | {"tokens": await pool.fetchval("SELECT count(*) FROM tokens WHERE revoked_at IS NULL")}

    before = await snapshot()
    async with api_server.client(token) as client:
        for route in MUTATING:
            await call(client, route, seeded, "default")
    assert await snapshot() == before


async def test_another_workspace_learns_nothing(api_server: ApiServer, pool: Pool) -> None:
    """A token of workspace B on /workspaces/default/... gets the same 403 for objects that
    exist and objects that do not, on every route."""
    seeded = await seed(pool)
    missing = Seed(
        waiting=999_999,
        ended=999_998,
        victim_token=999_997,
        event=999_996,
        notification=999_995,
        request=999_994,
        replay=999_993,
    )
    outsider = await make_token(pool, "team_b", "admin")
    async with api_server.client(outsider) as client:
        for route in (*MUTATING, *READS):
            if route.root_only:
                continue
            real = await call(client, route, seeded, "default")
            fake = await call(client, route, missing, "default")
            nowhere = await call(client, route, seeded, "no_such_workspace")
            assert real.status_code == fake.status_code == nowhere.status_code == 403, route
            assert real.json() == fake.json(), route
            assert "default" in real.json()["error"]["message"]
    made = await pool.fetchval("SELECT count(*) FROM workspaces WHERE name = 'made_here'")
    assert made == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer slc_not_a_real_token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_token_is_401_everywhere(
    headers: dict[str, str], api_server: ApiServer, pool: Pool
) -> None:
    seeded = await seed(pool)
    async with httpx.AsyncClient(base_url=api_server.api_url, headers=headers) as client:
        for route in (*MUTATING, *READS):
            response = await call(client, route, seeded, "default")
            assert response.status_code == 401, route
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"


async def test_only_an_admin_of_default_creates_workspaces(
    api_server: ApiServer, pool: Pool
) -> None:
    other_admin = await make_token(pool, "team_c", "admin")
    async with api_server.client(other_admin) as client:
        refused = await client.post("/workspaces", json={"name": "team_d"})
    assert refused.status_code == 403
    async with api_server.client() as root:
        assert (await root.post("/workspaces", json={"name": "team_d"})).status_code == 201


def test_the_tables_cover_every_route() -> None:
    """A new route must be added to the role matrix (and docs/api.md) before it ships."""
    schema = create_app(load_settings(database_url="postgresql://unused")).openapi()
    served = {
        (method.upper(), path.removeprefix("/api/v1"))
        for path, ops in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method in ops
    }
    covered = {(r.method, _template(r.path)) for r in (*MUTATING, *READS)}
    covered.add(("GET", "/workspaces"))  # any token: lists what it may see
    assert served == covered


def _template(path: str) -> str:
    """Map the tables' concrete paths back to the route templates of the OpenAPI schema."""
    parts = path.split("/")
    names = {
        "connections": "{name}",
        "triggers": "{name}",
        "workflows": "{name}",
        "instances": "{instance_id}",
        "events": "{event_id}",
        "tokens": "{token_id}",
        "nodes": "{node}",
        "versions": "{version}",
        "notifications": "{notification_id}",
        "requests": "{request_id}",
        "replays": "{replay_id}",
    }
    out = []
    for i, part in enumerate(parts):
        before = parts[i - 1] if i else ""
        if before in names and not part.startswith("{ws") and part != "test":
            out.append(names[before])
        elif before == "diff":
            out.append("{b}")
        else:
            out.append(part)
    text = "/".join(out)
    return text.replace("/versions/{version}/diff/{b}", "/versions/{a}/diff/{b}")
