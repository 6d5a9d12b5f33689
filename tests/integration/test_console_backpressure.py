"""The console's workflow page shows the queue against `policy.max_waiting` (backpressure)."""

from __future__ import annotations

import httpx

from tests.factories import shell_node
from tests.support.api import ApiServer, Pool, api_fixture, api_server_fixture  # noqa: F401

WS = "/workspaces/default"


async def test_workflow_page_shows_waiting_against_max_waiting(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    for name, policy in (("bounded", {"max_waiting": 5}), ("plain", {})):
        spec = {"name": name, "type": "manual", "policy": policy, "nodes": [shell_node("a")]}
        assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    # No executor runs: every requested run stays waiting.
    for _ in range(5):
        assert (await api.post(f"{WS}/workflows/bounded/runs", json={})).status_code == 202
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as console:
        signin = await console.post("/signin", data={"token": api_server.token, "next": "/"})
        assert signin.status_code == 303
        page = await console.get("/workflows/bounded")
        assert page.status_code == 200
        assert 'id="backpressure"' in page.text
        assert "5 of max_waiting 5 waiting" in page.text
        assert 'class="status bp-holding">holding<' in page.text
        assert "until fewer than 4 wait" in page.text
        other = await console.get("/workflows/plain")
        assert 'id="backpressure"' not in other.text
