"""The web console over a real socket and database, without a browser: sign-in and its cookie,
CSRF, the API deciding every action, each page answering, and offline /docs and /redoc."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from services.api.console import session
from tests.factories import shell_node
from tests.support.api import ApiServer, Pool, make_token

WS = "/workspaces/default"
PAGES = ("/", "/instances", "/events", "/triggers", "/resource-groups")


@asynccontextmanager
async def signed_in(server: ApiServer, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = await client.post("/signin", data={"token": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


@pytest.fixture
async def admin(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_in(api_server, api_server.token) as client:
        yield client


async def test_signin_sets_an_httponly_strict_cookie_and_signout_clears_it(
    api_server: ApiServer,
) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        assert (await client.get("/")).status_code == 303
        bad = await client.post("/signin", data={"token": "slc_wrong"})
        assert bad.status_code == 401 and "token: unknown or revoked" in bad.text
        good = await client.post("/signin", data={"token": api_server.token, "next": "//evil"})
        assert good.status_code == 303 and good.headers["location"] == "/"
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        page = await client.get("/")
        assert page.status_code == 200 and "Workflows" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        forged = await client.post("/signout", data={"csrf": "0" * 64})
        assert forged.status_code == 403
        out = await client.post("/signout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert (await client.get("/")).status_code == 303


async def test_actions_need_the_csrf_token_and_the_api_decides(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a", code="echo hi")]}
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    viewer_token = await make_token(pool, "default", "viewer")
    operator_token = await make_token(pool, "default", "operator")
    async with (
        signed_in(api_server, viewer_token) as viewer,
        signed_in(api_server, operator_token) as operator,
    ):
        run = f"/console/api{WS}/workflows/wf/runs"
        page = await viewer.get("/workflows/wf")
        assert page.status_code == 200 and 'id="run-button"' not in page.text
        no_csrf = await viewer.post(run, json={})
        assert no_csrf.status_code == 403 and "csrf" in no_csrf.json()["error"]["message"]
        forged = await viewer.post(run, json={}, headers={"X-CSRF-Token": csrf_of(page.text)})
        assert forged.status_code == 403, forged.text
        assert "needs 'operator'" in forged.json()["error"]["message"]
        other_site = await operator.post(
            run,
            json={},
            headers={
                "X-CSRF-Token": csrf_of((await operator.get("/")).text),
                "Origin": "http://evil.example",
            },
        )
        assert other_site.status_code == 403
        op_page = await operator.get("/workflows/wf")
        assert 'id="run-button"' in op_page.text and 'id="publish-button"' not in op_page.text
        ran = await operator.post(
            run, json={"trigger_message": {"x": 1}}, headers={"X-CSRF-Token": csrf_of(op_page.text)}
        )
        assert ran.status_code == 202, ran.text
        instance = ran.json()["instance_id"]
        shown = await viewer.get(f"/instances/{instance}")
        assert shown.status_code == 200 and 'id="terminate"' not in shown.text
        live = await viewer.get(f"/instances/{instance}/live")
        assert 'data-instance-state="waiting"' in live.text
        assert await pool.fetchval("SELECT count(*) FROM instances") == 1


async def test_every_page_answers_and_other_workspaces_stay_hidden(
    api_server: ApiServer, api: httpx.AsyncClient, admin: httpx.AsyncClient, pool: Pool
) -> None:
    trigger = {"name": "kt", "type": "kafka", "topic": "orders", "filter": "value.a == 'b'"}
    assert (await api.post(f"{WS}/triggers", json=trigger)).status_code == 201
    nodes = [shell_node("a"), shell_node("b", upstream=["a"]), shell_node("c", upstream=["a"])]
    spec = {"name": "wf", "type": "triggered", "trigger": "kt", "nodes": nodes}
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    spec["nodes"] = [*nodes, shell_node("d", upstream=["b", "c"])]
    assert (await api.put(f"{WS}/workflows/wf", json=spec)).status_code == 200
    for path in PAGES:
        page = await admin.get(path)
        assert page.status_code == 200, (path, page.text[:500])
    wf = await admin.get("/workflows/wf?diff_from=1&diff_to=2")
    assert wf.status_code == 200
    assert 'data-node="d"' in wf.text and "nodes[d]" in wf.text
    assert 'id="publish-button"' in wf.text  # shows v2, published is v1
    triggers = await admin.get("/triggers")
    assert "value.a == &#39;b&#39;" in triggers.text and "orders" in triggers.text
    assert (await admin.get("/instances/999999")).status_code == 404
    assert (await admin.get("/workflows/nope")).status_code == 404
    team = await make_token(pool, "team_b", "admin")
    async with signed_in(api_server, team) as other:
        listed = await other.get("/")
        assert 'data-workflow="wf"' not in listed.text
        assert (await other.get("/workflows/wf")).status_code == 404


async def test_docs_and_redoc_use_only_local_assets(api_server: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        for path in ("/docs", "/redoc"):
            page = await client.get(path)
            assert page.status_code == 200
            urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            assert urls and all(u.startswith("/") for u in urls), urls
            for url in urls:
                assert (await client.get(url)).status_code == 200, url
        assert "fonts.googleapis" not in (await client.get("/redoc")).text


def test_csrf_token_is_bound_to_the_session() -> None:
    assert session.csrf_ok("slc_a", session.csrf_token("slc_a"))
    assert not session.csrf_ok("slc_b", session.csrf_token("slc_a"))
    assert not session.csrf_ok("slc_a", None)


async def test_developer_publishes_and_freezes_through_the_console_and_payloads_stay_text(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {"name": "wf", "type": "manual", "nodes": [shell_node("a")]}
    assert (await api.post(f"{WS}/workflows", json=spec)).status_code == 201
    event = await pool.fetchval(
        """INSERT INTO events (workspace_id, source, subject, ref, received_at, payload)
           VALUES (1, 'kafka', 'orders', 'orders/0/7', now(), $1::jsonb) RETURNING id""",
        '{"value": "<script>alert(1)</script>"}',
    )
    await pool.execute(
        """INSERT INTO event_outcomes (event_id, seq, trigger_name, outcome, detail)
           VALUES ($1, 0, 'kt', 'filtered', 'filter value.a == ''b'' was false')""",
        event,
    )
    developer = await make_token(pool, "default", "developer")
    async with signed_in(api_server, developer) as client:
        page = await client.get("/workflows/wf")
        assert 'id="publish-button"' in page.text
        headers = {"X-CSRF-Token": csrf_of(page.text)}
        published = await client.post(
            f"/console/api{WS}/workflows/wf/publish", json={"version": 1}, headers=headers
        )
        assert published.status_code == 200 and published.json()["published_version"] == 1
        frozen = await client.post(f"/console/api{WS}/workflows/wf/freeze", headers=headers)
        assert frozen.status_code == 200 and frozen.json()["frozen"] is True
        spec["nodes"] = [shell_node("a"), shell_node("b", upstream=["a"])]
        assert (await api.put(f"{WS}/workflows/wf", json=spec)).status_code == 200
        old = await client.get("/workflows/wf?version=1")
        assert 'id="revert-button"' in old.text and "showing v1" in old.text
        reverted = await client.post(
            f"/console/api{WS}/workflows/wf/revert", json={"version": 1}, headers=headers
        )
        assert reverted.status_code == 200, reverted.text
        assert reverted.json()["version"] == 3
        latest = await client.get("/workflows/wf")
        assert 'data-node="b"' not in latest.text and "Latest v3" in latest.text
        listed = await client.get("/")
        assert "frozen" in listed.text
        shown = await client.get(f"/events/{event}")
        assert "<script>alert(1)</script>" not in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
        assert "filter value.a == &#39;b&#39; was false" in shown.text
        filtered = await client.get("/events?outcome=filtered")
        assert f'data-event="{event}"' in filtered.text
        missing = await client.get(f"/console/api{WS}/instances/1/nodes/a/log")
        assert missing.status_code == 404  # the API's answer, passed through
