"""Backpressure in the API and the CLI: a workflow's waiting instances against its bound."""

from __future__ import annotations

import httpx

from tests.factories import shell_node
from tests.support.api import (  # noqa: F401
    ApiServer,
    Pool,
    api_fixture,
    api_server_fixture,
    sluice_cli,
)

WS = "/workspaces/default"


async def test_status_and_console_show_waiting_against_max_waiting(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    spec = {
        "name": "bounded",
        "type": "manual",
        "policy": {"max_waiting": 5},
        "nodes": [shell_node("a")],
    }
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    plain = {"name": "plain", "type": "manual", "nodes": [shell_node("a")]}
    assert (await api.post(f"{WS}/workflows?publish=true", json=plain)).status_code == 201

    async def status() -> dict[str, object]:
        answer = await api.get(f"{WS}/workflows/bounded/status")
        assert answer.status_code == 200
        shown: dict[str, object] = answer.json()["backpressure"]
        return shown

    assert await status() == {
        "waiting": 0,
        "max_waiting": 5,
        "resumes_below": 4,
        "state": "open",
    }
    # No executor runs: every requested run stays waiting.
    for expected in ("open", "open", "open", "draining", "holding"):
        assert (await api.post(f"{WS}/workflows/bounded/runs", json={})).status_code == 202
        assert (await status())["state"] == expected
    assert (await status())["waiting"] == 5
    plain_status = (await api.get(f"{WS}/workflows/plain/status")).json()
    assert plain_status["backpressure"] is None

    shown = await sluice_cli(api_server, "workflow", "bounded")
    assert shown.code == 0, shown.err
    assert "queue:      5 of max_waiting 5 waiting (holding)" in shown.out


async def test_max_waiting_errors_name_the_field(api: httpx.AsyncClient) -> None:
    for bad in (0, "10", 2.5):
        spec = {
            "name": "bad",
            "type": "manual",
            "policy": {"max_waiting": bad},
            "nodes": [shell_node("a")],
        }
        answer = await api.post(f"{WS}/workflows", json=spec)
        assert answer.status_code == 422
        assert "max_waiting" in answer.text
