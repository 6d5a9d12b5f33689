"""Dependencies and workflow triggers through the HTTP API: 422 naming the field, the waiting
instance's reason and upstream, a group backfill created upstream first, workflow triggers."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import shell_node

WS = "/workspaces/default"


def daily(name: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "scheduled",
        "schedule": {"cron": "0 0 2 * * ?", "timezone": "UTC"},
        "nodes": [shell_node("a")],
        **kw,
    }


async def put(api: httpx.AsyncClient, spec: dict[str, Any]) -> httpx.Response:
    return await api.put(f"{WS}/workflows/{spec['name']}", json=spec, params={"publish": 1})


async def test_bad_dependencies_are_422_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await put(api, daily("dwd", depends_on=[{"workflow": "nope"}]))
    assert response.status_code == 422
    assert "depends_on.0.workflow" in response.text and "'nope'" in response.text
    response = await put(api, daily("dwd", depends_on=[{"workflow": "self"}]))
    assert response.status_code == 422
    assert "dependency cycle dwd -> dwd" in response.text
    assert (await put(api, daily("ods"))).is_success
    assert (await put(api, daily("dwd", depends_on=[{"workflow": "ods"}]))).is_success
    response = await put(api, daily("ods", depends_on=[{"workflow": "dwd"}]))
    assert response.status_code == 422
    assert "dependency cycle ods -> dwd -> ods" in response.text or (
        "dependency cycle dwd -> ods -> dwd" in response.text
    )


async def test_group_backfill_shows_who_waits_for_whom(api: httpx.AsyncClient) -> None:
    assert (await put(api, daily("ods"))).is_success
    assert (await put(api, daily("dwd", depends_on=[{"workflow": "ods"}]))).is_success
    response = await api.post(
        f"{WS}/backfills",
        json={"workflows": ["dwd", "ods"], "start": "20261201", "end": "20261202"},
    )
    assert response.status_code == 202, response.text
    group = response.json()
    assert [b["workflow"] for b in group["backfills"]] == ["ods", "dwd"]
    assert group["group_id"] == group["backfills"][0]["id"]
    ods_ids = group["backfills"][0]["instance_ids"]
    dwd_first = group["backfills"][1]["instance_ids"][0]
    out = (await api.get(f"{WS}/instances/{dwd_first}")).json()
    assert out["state"] == "waiting"
    assert out["reason"] == "upstream workflow ods for 20261201 not succeeded"
    [wait] = out["waiting_for"]
    assert wait["workflow"] == "ods" and wait["cycle"] == "same"
    assert wait["bizdate"] == "2026-12-01"
    assert wait["upstream_instance_id"] == ods_ids[0]
    assert wait["upstream_state"] == "waiting" and wait["satisfied"] is False


async def test_workflow_triggers_are_stored_and_validated(api: httpx.AsyncClient) -> None:
    body = {"name": "after_ods", "type": "workflow", "workflow": "ods", "states": ["failed"]}
    response = await api.post(f"{WS}/triggers", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["refire_on_rerun"] is False
    bad = {**body, "name": "t2", "states": ["running"]}
    response = await api.post(f"{WS}/triggers", json=bad)
    assert response.status_code == 422 and "states" in response.text
