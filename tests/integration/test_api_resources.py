"""HTTP API over a real socket and database: workspaces, tokens, connections, triggers, workflows,
and the error envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.factories import shell_node
from tests.support.api import ApiServer, Pool

WS = "/workspaces/default"


def manual(name: str = "wf", **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "manual", "nodes": [shell_node("a", code="echo hi")], **kw}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    info: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(info)
    return info


# ------------------------------------------------------------------------------- workspaces


async def test_new_workspace_comes_with_an_admin_token_for_it_only(
    api: httpx.AsyncClient, api_server: ApiServer
) -> None:
    created = await api.post("/workspaces", json={"name": "team_a", "parameters": {"r": "eu"}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["workspace"]["name"] == "team_a"
    assert body["workspace"]["parameters"] == {"r": "eu"}
    assert body["token"]["role"] == "admin" and body["token"]["secret"].startswith("slc_")
    async with api_server.client(body["token"]["secret"]) as team:
        assert (await team.get("/workspaces/team_a/triggers")).json()["items"] == []
        mine = await team.get("/workspaces")
        assert [w["name"] for w in mine.json()["items"]] == ["team_a"]
        assert (await team.get(f"{WS}/triggers")).status_code == 403
    every = await api.get("/workspaces")
    assert [w["name"] for w in every.json()["items"]] == ["default", "team_a"]
    again = await api.post("/workspaces", json={"name": "team_a"})
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"


async def test_workspace_parameters_are_replaced_by_put(api: httpx.AsyncClient) -> None:
    put = await api.put(WS, json={"parameters": {"region": "cn-hangzhou"}})
    assert put.status_code == 200
    got = await api.get(WS)
    assert got.json()["parameters"] == {"region": "cn-hangzhou"}


# ----------------------------------------------------------------------------------- tokens


async def test_token_lifecycle_secret_shown_once_then_revoked(
    api: httpx.AsyncClient, api_server: ApiServer
) -> None:
    created = await api.post(f"{WS}/tokens", json={"name": "ci", "role": "viewer"})
    assert created.status_code == 201
    token = created.json()
    secret = token.pop("secret")
    listed = (await api.get(f"{WS}/tokens")).json()["items"]
    assert token in listed
    assert secret not in (await api.get(f"{WS}/tokens")).text
    async with api_server.client(secret) as viewer:
        assert (await viewer.get(f"{WS}/workflows")).status_code == 200
        revoked = await api.delete(f"{WS}/tokens/{token['id']}")
        assert revoked.status_code == 204
        after = await viewer.get(f"{WS}/workflows")
        assert after.status_code == 401
        assert after.headers["www-authenticate"] == "Bearer"
    assert (await api.delete(f"{WS}/tokens/{token['id']}")).status_code == 404


async def test_token_list_pages_by_cursor(api: httpx.AsyncClient) -> None:
    for i in range(4):
        assert (await api.post(f"{WS}/tokens", json={"name": f"t{i}", "role": "viewer"})).is_success
    seen: list[str] = []
    cursor = None
    while True:
        page = (await api.get(f"{WS}/tokens", params={"limit": 2, "cursor": cursor})).json()
        assert len(page["items"]) <= 2
        seen += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["bootstrap", "t0", "t1", "t2", "t3"]


# ------------------------------------------------------------------------------ connections


async def test_connection_secrets_are_write_only(
    api: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "name": "warehouse",
        "kind": "postgres",
        "config": {"host": "db", "user": "etl"},
        "secrets": {"password": "hunter2-very-secret"},
    }
    created = await api.post(f"{WS}/connections", json=spec)
    assert created.status_code == 201
    assert created.json()["secret_keys"] == ["password"]
    responses = [
        created,
        await api.get(f"{WS}/connections/warehouse"),
        await api.get(f"{WS}/connections"),
        await api.put(f"{WS}/connections/warehouse", json={**spec, "secrets": None}),
        await api.post(f"{WS}/connections", json=spec),  # conflict
        await api.put(f"{WS}/connections/warehouse", json={**spec, "bogus": 1}),  # invalid
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 409, 422]
    for response in responses:
        assert "hunter2" not in response.text
    kept = responses[3].json()
    assert kept == {"connection": kept["connection"], "created": False}
    assert kept["connection"]["secret_keys"] == ["password"]
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err


async def test_connection_put_creates_then_delete_removes(api: httpx.AsyncClient) -> None:
    spec = {"name": "lake", "kind": "s3", "config": {"bucket": "b"}}
    first = await api.put(f"{WS}/connections/lake", json=spec)
    assert first.status_code == 201 and first.json()["created"] is True
    mismatch = await api.put(f"{WS}/connections/other", json=spec)
    assert mismatch.status_code == 422 and error_of(mismatch)["field"] == "name"
    assert (await api.delete(f"{WS}/connections/lake")).status_code == 204
    gone = await api.get(f"{WS}/connections/lake")
    assert gone.status_code == 404
    assert error_of(gone) == {"code": "not_found", "message": "connection 'lake' not found"}
    assert (await api.delete(f"{WS}/connections/lake")).status_code == 404


# --------------------------------------------------------------------------------- triggers


async def test_trigger_create_update_unchanged_and_conflict(api: httpx.AsyncClient) -> None:
    spec = {"name": "kt", "type": "kafka", "topic": "orders"}
    created = await api.post(f"{WS}/triggers", json=spec)
    assert created.status_code == 201
    assert created.json()["spec"]["dedup"] == "offset"
    assert (await api.post(f"{WS}/triggers", json=spec)).status_code == 409
    same = await api.put(f"{WS}/triggers/kt", json=spec)
    assert same.status_code == 200
    assert (same.json()["created"], same.json()["changed"]) == (False, False)
    changed = await api.put(f"{WS}/triggers/kt", json={**spec, "filter": "value.a == 'b'"})
    assert (changed.json()["created"], changed.json()["changed"]) == (False, True)
    got = await api.get(f"{WS}/triggers/kt")
    assert got.json()["spec"]["filter"] == "value.a == 'b'"
    s3 = await api.put(f"{WS}/triggers/st", json={"name": "st", "type": "s3", "bucket": "data"})
    assert s3.status_code == 201 and s3.json()["created"] is True


async def test_trigger_delete_refused_while_bound(api: httpx.AsyncClient) -> None:
    await api.post(f"{WS}/triggers", json={"name": "kt", "type": "kafka", "topic": "t"})
    wf = {"name": "wf", "type": "triggered", "trigger": "kt", "nodes": [shell_node("a")]}
    assert (await api.post(f"{WS}/workflows", json=wf)).status_code == 201
    refused = await api.delete(f"{WS}/triggers/kt")
    assert refused.status_code == 409
    assert "wf" in error_of(refused)["message"]
    assert (await api.delete(f"{WS}/workflows/wf")).status_code == 204
    assert (await api.delete(f"{WS}/triggers/kt")).status_code == 204
    assert (await api.get(f"{WS}/triggers/kt")).status_code == 404


async def test_trigger_list_pages_in_name_order(api: httpx.AsyncClient) -> None:
    for name in ("c_t", "a_t", "b_t"):
        await api.post(f"{WS}/triggers", json={"name": name, "type": "kafka", "topic": "x"})
    first = (await api.get(f"{WS}/triggers", params={"limit": 2})).json()
    assert [t["name"] for t in first["items"]] == ["a_t", "b_t"]
    second = (
        await api.get(f"{WS}/triggers", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [t["name"] for t in second["items"]] == ["c_t"]
    assert second["next_cursor"] is None


# -------------------------------------------------------------------------------- workflows


async def test_workflow_versions_publish_revert_clone_diff(api: httpx.AsyncClient) -> None:
    created = await api.post(f"{WS}/workflows", json=manual())
    assert created.status_code == 201
    assert created.json() | {"workflow": None} == {
        "workflow": None,
        "version": 1,
        "created": True,
        "new_version": True,
        "published": False,
        "changed": True,
    }
    assert (await api.post(f"{WS}/workflows", json=manual())).status_code == 409
    same = (await api.put(f"{WS}/workflows/wf", json=manual())).json()
    assert (same["version"], same["new_version"], same["changed"]) == (1, False, False)
    v2_spec = manual(nodes=[shell_node("a", code="echo v2"), shell_node("b", ["a"])])
    v2 = (await api.put(f"{WS}/workflows/wf", params={"publish": True}, json=v2_spec)).json()
    assert (v2["version"], v2["new_version"], v2["published"]) == (2, True, True)
    assert v2["workflow"]["published_version"] == 2

    detail = (await api.get(f"{WS}/workflows/wf")).json()
    assert detail["current_version"] == 2 and detail["spec"]["nodes"][1]["name"] == "b"
    versions = (await api.get(f"{WS}/workflows/wf/versions")).json()["items"]
    assert [(v["version"], v["published"]) for v in versions] == [(1, False), (2, True)]
    v1 = (await api.get(f"{WS}/workflows/wf/versions/1")).json()
    assert v1["spec"]["nodes"][0]["code"] == "echo hi"

    diff = (await api.get(f"{WS}/workflows/wf/versions/1/diff/2")).json()
    changes = {c["path"]: c for c in diff["changes"]}
    assert changes["nodes[a].code"] == {
        "path": "nodes[a].code",
        "op": "changed",
        "old": "echo hi",
        "new": "echo v2",
    }
    assert changes["nodes[b]"]["op"] == "added"
    assert '-      "code": "echo hi",' in diff["unified"]
    assert '+      "code": "echo v2",' in diff["unified"]

    published = await api.post(f"{WS}/workflows/wf/publish", json={"version": 1})
    assert published.json()["published_version"] == 1
    latest = await api.post(f"{WS}/workflows/wf/publish")
    assert latest.json()["published_version"] == 2

    reverted = await api.post(f"{WS}/workflows/wf/revert", json={"version": 1, "publish": True})
    assert reverted.status_code == 200
    assert (reverted.json()["version"], reverted.json()["published"]) == (3, True)
    assert reverted.json()["workflow"]["published_version"] == 3
    back = (await api.get(f"{WS}/workflows/wf/versions/3/diff/1")).json()
    assert back["changes"] == [] and back["unified"] == ""

    clone = await api.post(f"{WS}/workflows/wf/clone", json={"name": "wf_copy"})
    assert clone.status_code == 201
    assert clone.json()["workflow"]["published_version"] is None
    assert (await api.get(f"{WS}/workflows/wf_copy")).json()["spec"]["name"] == "wf_copy"
    dup = await api.post(f"{WS}/workflows/wf/clone", json={"name": "wf_copy"})
    assert dup.status_code == 409


async def test_freeze_unfreeze_and_delete(api: httpx.AsyncClient) -> None:
    await api.post(f"{WS}/workflows", json=manual())
    assert (await api.post(f"{WS}/workflows/wf/freeze")).json()["frozen"] is True
    assert (await api.get(f"{WS}/workflows/wf")).json()["frozen"] is True
    assert (await api.post(f"{WS}/workflows/wf/unfreeze")).json()["frozen"] is False
    assert (await api.delete(f"{WS}/workflows/wf")).status_code == 204
    assert (await api.get(f"{WS}/workflows/wf")).status_code == 404


async def test_delete_refused_while_an_instance_waits(api: httpx.AsyncClient) -> None:
    await api.post(f"{WS}/workflows", json=manual(), params={"publish": True})
    assert (await api.post(f"{WS}/workflows/wf/runs", json={})).status_code == 202
    refused = await api.delete(f"{WS}/workflows/wf")
    assert refused.status_code == 409
    assert "waiting or running" in error_of(refused)["message"]


async def test_workflow_list_filters_by_type(api: httpx.AsyncClient) -> None:
    await api.post(f"{WS}/workflows", json=manual("m1"))
    await api.post(f"{WS}/triggers", json={"name": "kt", "type": "kafka", "topic": "t"})
    await api.post(
        f"{WS}/workflows",
        json={"name": "t1", "type": "triggered", "trigger": "kt", "nodes": [shell_node("a")]},
    )
    every = (await api.get(f"{WS}/workflows")).json()["items"]
    assert [(w["name"], w["trigger"]) for w in every] == [("m1", None), ("t1", "kt")]
    only = (await api.get(f"{WS}/workflows", params={"type": "triggered"})).json()["items"]
    assert [w["name"] for w in only] == ["t1"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            {"nodes": [shell_node("a"), shell_node("b", ["zz"])]},
            "nodes.1.upstream",
            "unknown node 'zz'",
        ),
        ({"nodes": [{"name": "a", "type": "shell"}]}, "nodes.0.code", "Field required"),
        (
            {"nodes": [shell_node("a", priority=2)]},
            "nodes.0.priority",
            "priority must be one of 1, 3, 5, 7, 8, got 2",
        ),
        (
            {
                "nodes": [
                    {"name": "a", "type": "check", "check": {"kind": "sql", "connection": "c"}}
                ]
            },
            "nodes.0.check.query",
            "Field required",
        ),
        ({"nodes": [shell_node("a", ["b"]), shell_node("b", ["a"])]}, "nodes", "dependency cycle"),
        ({"policy": {"max_parallel_instances": 0}}, "policy.max_parallel_instances", "greater"),
        ({"bogus": True}, "bogus", "Extra inputs are not permitted"),
        ({"nodes": [shell_node(f"n{i}") for i in range(401)]}, "nodes", "at most 400"),
        (
            {"type": "scheduled", "schedule": {"cron": "not a cron"}},
            "schedule.cron",
            "expected 5 fields",
        ),
        ({"type": "triggered", "trigger": "nope"}, "trigger", "does not exist"),
        ({"name": "bad name!"}, "name", "must start with a letter"),
    ],
)
async def test_invalid_workflow_specs_name_the_field(
    api: httpx.AsyncClient, change: dict[str, Any], field: str, reason: str
) -> None:
    spec = {**manual(), **change}
    response = await api.post(f"{WS}/workflows", json=spec)
    assert response.status_code == 422, response.text
    info = error_of(response)
    assert info["code"] == "invalid"
    assert info["field"] == field
    assert reason in info["message"]
    assert (await api.get(f"{WS}/workflows")).json()["items"] == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "t", "type": "kafka"}, "topic"),
        ({"name": "t", "type": "s3", "bucket": "x"}, "bucket"),
        ({"name": "t", "type": "kafka", "topic": "a", "filter": "[["}, "filter"),
        ({"name": "t", "type": "mqtt"}, None),
        ({"name": "t", "type": "s3", "bucket": "data", "dedup": "offset"}, "dedup"),
    ],
)
async def test_invalid_trigger_specs_name_the_field(
    api: httpx.AsyncClient, spec: dict[str, Any], field: str | None
) -> None:
    response = await api.post(f"{WS}/triggers", json=spec)
    assert response.status_code == 422
    assert error_of(response).get("field") == field


# ---------------------------------------------------------------------------- the envelope


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "code"),
    [
        ("GET", "/nope", {}, 404, "not_found"),
        ("DELETE", f"{WS}/events", {}, 405, "method_not_allowed"),
        (
            "POST",
            f"{WS}/triggers",
            {"content": b"{bad", "headers": {"content-type": "application/json"}},
            422,
            "invalid",
        ),
        ("POST", f"{WS}/triggers", {"content": b'{"name": "x"}'}, 422, "invalid"),
        ("POST", f"{WS}/triggers", {"content": b"x" * (2 << 20)}, 413, "payload_too_large"),
        ("POST", f"{WS}/triggers", {"content": _chunks(3 << 20)}, 413, "payload_too_large"),
        ("GET", f"{WS}/instances", {"params": {"cursor": "!!"}}, 422, "invalid"),
        ("GET", f"{WS}/instances", {"params": {"limit": 0}}, 422, "invalid"),
        ("GET", f"{WS}/instances/0", {}, 422, "invalid"),
        ("GET", f"{WS}/instances/99", {}, 404, "not_found"),
        ("GET", f"{WS}/events/99", {}, 404, "not_found"),
        ("GET", f"{WS}/workflows/nope/versions/1/diff/2", {}, 404, "not_found"),
    ],
)
async def test_every_error_has_the_envelope(
    api: httpx.AsyncClient, method: str, path: str, kw: dict[str, Any], status: int, code: str
) -> None:
    response = await api.request(method, path, **kw)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/workflows/nope/versions", None, 404, "workflow 'nope' not found"),
        ("POST", "/workflows/wf/publish", {"version": 9}, 404, "version 9 not found"),
        ("POST", "/workflows/wf/revert", {"version": 9}, 404, "version 9 not found"),
        ("POST", "/workflows/wf/revert", {}, 422, "version: Field required"),
        ("POST", "/workflows/nope/clone", {"name": "x"}, 404, "workflow 'nope' not found"),
        ("POST", "/workflows/wf/clone", {"name": "bad name"}, 422, "name: must start"),
        ("POST", "/workflows/nope/freeze", None, 404, "workflow 'nope' not found"),
        ("POST", "/workflows/nope/unfreeze", None, 404, "workflow 'nope' not found"),
        ("DELETE", "/workflows/nope", None, 404, "workflow 'nope' not found"),
        ("PUT", "/workflows/other", manual(), 422, "name: 'wf' differs from the path's 'other'"),
        ("DELETE", "/triggers/nope", None, 404, "trigger 'nope' not found"),
        ("GET", "/triggers/nope", None, 404, "trigger 'nope' not found"),
        ("PUT", "", {"parameters": "x"}, 422, "parameters: Input should be a valid dictionary"),
        ("POST", "/tokens", {"name": "t", "role": "root"}, 422, "role: Input should be"),
        ("DELETE", "/tokens/999", None, 404, "token 999 not found"),
        ("POST", "/connections", {"name": "c", "kind": "ftp"}, 422, "kind: Input should be"),
    ],
)
async def test_error_paths_of_each_route(
    api: httpx.AsyncClient, method: str, path: str, body: Any, status: int, message: str
) -> None:
    await api.post(f"{WS}/workflows", json=manual())
    response = await api.request(method, f"{WS}{path}", json=body)
    assert response.status_code == status, response.text
    assert error_of(response)["message"].startswith(message)


async def test_body_just_under_the_limit_is_accepted(api_server: ApiServer, db_url: str) -> None:
    from tests.support.api import running_api

    async with running_api(db_url, max_request_bytes=4096) as small:
        async with small.client() as client:
            spec = {"name": "t", "type": "kafka", "topic": "x", "description": "d" * 3000}
            assert (await client.post(f"{WS}/triggers", json=spec)).status_code == 201
            spec = {**spec, "name": "u", "description": "d" * 5000}
            over = await client.post(f"{WS}/triggers", json=spec)
            assert over.status_code == 413
            assert "4096" in error_of(over)["message"]


async def test_validation_errors_list_every_field(api: httpx.AsyncClient) -> None:
    response = await api.post(f"{WS}/triggers", json={"name": "bad name", "type": "kafka"})
    info = error_of(response)
    assert {e["field"] for e in info["errors"]} == {"name", "topic"}


async def test_version_not_found_names_it(api: httpx.AsyncClient, pool: Pool) -> None:
    await api.post(f"{WS}/workflows", json=manual())
    response = await api.get(f"{WS}/workflows/wf/versions/7")
    assert error_of(response) == {"code": "not_found", "message": "version 7 not found"}
    assert await pool.fetchval("SELECT count(*) FROM workflow_versions") == 1


async def test_openapi_and_docs_are_served(api_server: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as client:
        schema = (await client.get("/openapi.json")).json()
        assert "/api/v1/workspaces/{ws}/workflows/{name}/runs" in schema["paths"]
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
