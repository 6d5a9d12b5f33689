"""Coalescing seen through the HTTP API, the console and the CLI: the option is validated naming
the field, the instance lists its events, each event's audit names the instance."""

from __future__ import annotations

import argparse
import asyncio
import io
from typing import Any

import httpx
import pytest

from services.api.commands import _instance
from shared import intake
from shared.client.http import Client
from shared.db import coalesce_windows
from tests.factories import s3_event, shell_node
from tests.support.api import ApiServer, Pool, api_fixture, api_server_fixture  # noqa: F401

WS = "/workspaces/default"
TRIGGER = {"name": "files", "type": "s3", "bucket": "data", "key_pattern": "in/*.csv"}


@pytest.mark.parametrize(
    ("coalesce", "field"),
    [
        ({"window_s": 0}, "coalesce.window_s"),
        ({"max_events": 5}, "coalesce.window_s"),
        ({"window_s": 10, "max_events": 0}, "coalesce.max_events"),
        ({"window_s": 10, "every": 5}, "coalesce.every"),
    ],
)
async def test_an_invalid_coalesce_option_names_the_field(
    api: httpx.AsyncClient, coalesce: dict[str, Any], field: str
) -> None:
    response = await api.post(f"{WS}/triggers", json={**TRIGGER, "coalesce": coalesce})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_instance_and_events_show_the_window(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    trigger = {**TRIGGER, "coalesce": {"window_s": 60, "max_events": 10}}
    assert (await api.post(f"{WS}/triggers", json=trigger)).status_code == 201
    spec = {"name": "wf", "type": "triggered", "trigger": "files", "nodes": [shell_node("a")]}
    assert (await api.post(f"{WS}/workflows?publish=true", json=spec)).status_code == 201
    got = (await api.get(f"{WS}/triggers/files")).json()
    assert got["spec"]["coalesce"] == {"window_s": 60.0, "max_events": 10}

    results = [
        await intake.admit(pool, s3_event(key=f"in/{n}.csv", etag=f"e{n}")) for n in range(3)
    ]
    event_ids = [r[0].event_id for r in results]
    await pool.execute("UPDATE coalesce_windows SET closes_at = now()")
    [instance_id] = await coalesce_windows.close_due(pool)

    detail = (await api.get(f"{WS}/instances/{instance_id}")).json()
    assert detail["coalesced_events"] == 3
    assert detail["coalesced_event_ids"] == event_ids
    assert detail["event_id"] == event_ids[0]
    for event_id in event_ids:
        event = (await api.get(f"{WS}/events/{event_id}")).json()
        [outcome] = event["outcomes"]
        assert (outcome["outcome"], outcome["instance_ids"]) == ("coalesced", [instance_id])
    listed = (await api.get(f"{WS}/events", params={"outcome": "coalesced"})).json()
    assert sorted(e["id"] for e in listed["items"]) == event_ids

    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as console:
        signed = await console.post("/signin", data={"token": api_server.token, "next": "/"})
        assert signed.status_code == 303
        page = await console.get(f"/instances/{instance_id}")
    assert page.status_code == 200
    assert "coalesced 3 events" in page.text
    assert all(f'href="/events/{e}"' in page.text for e in event_ids)

    # `sluice instance <id>` (a blocking client: run off the loop that serves the API).
    out = io.StringIO()
    args = argparse.Namespace(id=instance_id, json=False)
    with Client(api_server.url, api_server.token) as cli:
        await asyncio.to_thread(_instance, args, cli, out)
    assert f"coalesced: 3 events ({', '.join(map(str, event_ids))})" in out.getvalue()
