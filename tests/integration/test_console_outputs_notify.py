"""The console's node outputs and notifications over a real socket and database: outputs per
attempt and the current ones arrive as text, the outbox list filters and pages, and only the API
decides who may send a test message."""

from __future__ import annotations

import re

import httpx

from tests.factories import shell_node
from tests.integration.test_console_http import csrf_of, signed_in
from tests.support.api import ApiServer, Pool, api_fixture, api_server_fixture, make_token  # noqa: F401
from tests.support.executor import running_executor, wait_instance, wait_request

WS = "/workspaces/default"
HOSTILE_CODE = """
import json, os
value = {
    "attempt": int(os.environ["SLUICE_ATTEMPT"]),
    "html": "<script>alert(1)</script>",
    "attr": '"><img src=x onerror=alert(1)>',
}
with open(os.environ["SLUICE_OUTPUT_FILE"], "w") as out:
    json.dump(value, out)
"""
BIG_CODE = """
import json, os
with open(os.environ["SLUICE_OUTPUT_FILE"], "w") as out:
    json.dump({"rows": "x" * 10000}, out)
"""


async def test_outputs_show_per_attempt_and_current_as_escaped_text(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool, db_url: str
) -> None:
    spec = {
        "name": "emits",
        "type": "manual",
        "nodes": [
            {"name": "emit", "type": "python", "code": HOSTILE_CODE},
            {"name": "big", "type": "python", "code": BIG_CODE},
            {"name": "quiet", "type": "shell", "code": "true", "upstream": ["emit"]},
        ],
    }
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    iid = (await api.post(f"{WS}/workflows/emits/runs", json={})).json()["instance_id"]
    viewer_token = await make_token(pool, "default", "viewer")
    async with signed_in(api_server, viewer_token) as viewer:
        before = await viewer.get(f"/instances/{iid}")
        assert "No node has succeeded yet." in before.text
        async with running_executor(db_url):
            assert await wait_instance(pool, iid) == "succeeded"
            rerun = await api.post(f"{WS}/instances/{iid}/rerun", json={"mode": "all"})
            assert rerun.status_code == 202, rerun.text
            assert await wait_request(pool, rerun.json()["id"]) == "done"
            assert await wait_instance(pool, iid, "succeeded", "failed") == "succeeded"
        for path in (f"/instances/{iid}", f"/instances/{iid}/live"):
            page = (await viewer.get(path)).text
            assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert "\\&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
            current = page.split('id="outputs"', 1)[1]
            # The current outputs are the rerun's: attempt 2 of `emit`.
            assert '<tr data-outputs-node="emit"><td>emit</td><td>2</td>' in current
            assert "&quot;attempt&quot;: 2" in current
            assert (
                'data-outputs-node="quiet"><td>quiet</td><td>2</td><td><span class="muted">none'
                in (current)
            )
            attempts = page.split('id="attempts"', 1)[1].split('id="outputs"', 1)[0]
            assert "&quot;attempt&quot;: 1" in attempts and "&quot;attempt&quot;: 2" in attempts
            # A large value shows its start and links the whole of it.
            assert "whole value (JSON)" in current and "x" * 10000 not in page
        whole = await viewer.get(f"/console/api{WS}/instances/{iid}/nodes/big/outputs")
        assert whole.status_code == 200 and whole.json()["outputs"] == {"rows": "x" * 10000}


async def _outbox(pool: Pool, instance_id: int | None) -> None:
    """60 notifications: 45 sent, 10 pending, 5 dead (one error hostile), newest dead."""
    await pool.execute(
        """INSERT INTO notifications (workspace_id, instance_id, node, event, rule_no, channel,
                                      rule, message_id, state, attempts, last_error, sent_at)
           SELECT 1, $1, 'load', 'failure', g, 'webhook', '{}'::jsonb, gen_random_uuid(),
                  CASE WHEN g <= 45 THEN 'sent' WHEN g <= 55 THEN 'pending' ELSE 'dead' END,
                  CASE WHEN g <= 45 THEN 1 WHEN g <= 55 THEN 2 ELSE 8 END,
                  CASE WHEN g = 60 THEN 'HTTP 500: <script>alert(2)</script>'
                       WHEN g > 45 THEN 'HTTP 503' END,
                  CASE WHEN g <= 45 THEN now() END
           FROM generate_series(1, 60) g""",
        instance_id,
    )


async def test_notifications_list_filters_pages_and_shows_on_the_instance(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {"name": "alerts", "type": "manual", "nodes": [shell_node("load")]}
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    iid = (await api.post(f"{WS}/workflows/alerts/runs", json={})).json()["instance_id"]
    await _outbox(pool, iid)
    viewer_token = await make_token(pool, "default", "viewer")
    async with signed_in(api_server, viewer_token) as viewer:
        first = await viewer.get("/notifications")
        assert first.status_code == 200
        assert 'href="/notifications" class="on"' in first.text
        assert first.text.count("data-notification=") == 50
        assert 'data-refresh="3000"' in first.text
        assert f'<a href="/instances/{iid}">{iid}</a>' in first.text
        assert '<a href="/workflows/alerts">alerts</a>' in first.text
        assert "<script>alert(2)</script>" not in first.text
        assert "HTTP 500: &lt;script&gt;alert(2)&lt;/script&gt;" in first.text
        assert 'id="notify-test-button"' not in first.text  # a viewer: no button
        found = re.search(r'href="([^"]+)" id="next-page"', first.text)
        assert found is not None
        older = await viewer.get(found.group(1).replace("&amp;", "&"))
        assert older.text.count("data-notification=") == 10
        assert 'data-refresh="3000"' not in older.text and 'id="next-page"' not in older.text
        dead = await viewer.get("/notifications?state=dead")
        assert dead.text.count("data-notification=") == 5
        assert dead.text.count('class="state st-dead"') == 5 and "st-sent" not in dead.text
        assert (await viewer.get("/notifications?state=bogus")).status_code == 200
        shown = await viewer.get(f"/instances/{iid}")
        assert shown.text.count("data-notification=") == 50
        assert f'href="/notifications?instance={iid}"' in shown.text
        # After the run the page stops its live reads; the alerts table re-reads only itself.
        source = f"/instances/{iid}/notifications"
        assert f'data-refresh-from="{source}"' in shown.text
        polled = await viewer.get(source)
        assert polled.status_code == 200 and polled.text.count("data-notification=") == 50
        assert "<html" not in polled.text and 'id="notifications"' in polled.text
        only = await viewer.get(f"/notifications?instance={iid}&state=pending")
        assert only.text.count("data-notification=") == 10

        forged = await viewer.post(
            f"/console/api{WS}/notifications/test",
            json={"rule": {"on": ["failure"], "channel": "webhook", "url": "https://x.test/h"}},
            headers={"X-CSRF-Token": csrf_of(first.text)},
        )
        assert forged.status_code == 403, forged.text
        assert "needs 'developer'" in forged.json()["error"]["message"]
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE event = 'test'") == 0

    developer = await make_token(pool, "default", "developer")
    async with signed_in(api_server, developer) as client:
        page = await client.get("/notifications")
        assert 'id="notify-test-button"' in page.text and 'id="notify-test-dialog"' in page.text
        queued = await client.post(
            f"/console/api{WS}/notifications/test",
            json={"rule": {"on": ["failure"], "channel": "webhook", "url": "https://x.test/h"}},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )
        assert queued.status_code == 202, queued.text
        listed = await client.get("/notifications?state=pending")
        assert f'data-notification="{queued.json()["id"]}"' in listed.text

    team = await make_token(pool, "team_b", "admin")
    async with signed_in(api_server, team) as other:
        assert "data-notification=" not in (await other.get("/notifications")).text
        assert "data-notification=" not in (await other.get(f"/instances/{iid}/notifications")).text
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as anonymous:
        assert (await anonymous.get(f"/instances/{iid}/notifications")).status_code == 401
        assert (await anonymous.get("/notifications")).status_code == 303
