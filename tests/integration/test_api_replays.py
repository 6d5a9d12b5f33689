"""`POST .../triggers/{name}/replay` queues a job (202) and `GET .../replays/{id}` shows it; bad
ranges are 422 naming the field. Carrying jobs out is the listeners' part (test_replay_*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.db import triggers as trigger_repo
from shared.models.triggers import WorkflowTriggerSpec
from tests.factories import add_trigger, add_workflow, kafka_trigger, s3_trigger, workflow
from tests.support.api import Pool, running_api

T0 = "2026-11-01T00:00:00Z"
T1 = "2026-11-02T00:00:00Z"


@pytest.fixture
async def replay_api(db_url: str, pool: Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger("orders_t", "orders"))
        await add_trigger(conn, s3_trigger("files_t", "data-bucket"))
        await add_workflow(conn, workflow("up", type="manual"))
        await trigger_repo.upsert(
            conn,
            "default",
            1,
            WorkflowTriggerSpec(name="after_up", type="workflow", workflow="up"),
        )
    async with running_api(db_url, replay_max_events=100) as server, server.client() as client:
        yield client


async def test_a_replay_is_queued_and_shown(replay_api: httpx.AsyncClient) -> None:
    response = await replay_api.post(
        "/workspaces/default/triggers/orders_t/replay",
        json={"from": {"0": 10, "1": 0}, "to": {"0": 20, "1": 5}, "mode": "all"},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "pending"
    shown = (await replay_api.get(f"/workspaces/default/replays/{accepted['replay_id']}")).json()
    assert {k: shown[k] for k in ("trigger", "source", "mode", "from", "to", "max_events")} == {
        "trigger": "orders_t",
        "source": "kafka",
        "mode": "all",
        "from": {"0": 10, "1": 0},
        "to": {"0": 20, "1": 5},
        "max_events": 100,
    }
    counts = ("read", "admitted", "duplicate", "filtered", "other")
    assert [shown[k] for k in counts] == [0, 0, 0, 0, 0]
    assert (shown["state"], shown["error"]) == ("pending", None)

    listed = (await replay_api.get("/workspaces/default/replays", params={"limit": 1})).json()
    assert [r["id"] for r in listed["items"]] == [accepted["replay_id"]]
    assert listed["next_cursor"] is None

    by_time = await replay_api.post(
        "/workspaces/default/triggers/files_t/replay",
        json={"from": T0, "to": T1, "max_events": 5},
    )
    assert by_time.status_code == 202, by_time.text
    shown = await replay_api.get(f"/workspaces/default/replays/{by_time.json()['replay_id']}")
    assert {k: shown.json()[k] for k in ("source", "mode", "max_events")} == {
        "source": "s3",
        "mode": "missing",
        "max_events": 5,
    }


@pytest.mark.parametrize(
    ("trigger", "body", "field", "message"),
    [
        ("orders_t", {"from": T1, "to": T0}, "to", "must be after from"),
        ("orders_t", {"from": T0, "to": T0}, "to", "must be after from"),
        ("orders_t", {"from": T0, "to": {"0": 1}}, "to", "must be a time when from is a time"),
        ("orders_t", {"from": {"0": 5}, "to": {"0": 5}}, "to", "partition 0 must be above"),
        ("orders_t", {"from": {"0": 0}, "to": {"1": 5}}, "to", "same partitions"),
        ("orders_t", {"from": {}, "to": {}}, "from", "names no partition"),
        ("orders_t", {"from": {"0": -1}, "to": {"0": 5}}, "from", "negative"),
        ("orders_t", {"from": {"0": 0}, "to": {"0": 101}}, "to", "span 101 records"),
        ("orders_t", {"from": T0, "to": T1, "max_events": 101}, "max_events", "over the limit"),
        ("orders_t", {"from": T0, "to": T1, "max_events": 0}, "max_events", ""),
        ("orders_t", {"from": "2026-11-01T00:00:00", "to": T1}, "from", "must name its zone"),
        ("orders_t", {"from": T0, "to": "yesterday"}, "to", "not an ISO-8601 time"),
        ("orders_t", {"from": 5, "to": T1}, "from", "ISO-8601 time or a {partition: offset}"),
        ("orders_t", {"to": T1}, "from", ""),
        ("orders_t", {"from": T0, "to": T1, "mode": "some"}, "mode", ""),
        ("orders_t", {"from": T0, "to": T1, "since": T0}, "since", ""),
        ("files_t", {"from": {"0": 0}, "to": {"0": 5}}, "from", "replayed by time"),
    ],
)
async def test_a_bad_request_is_422_naming_the_field(
    replay_api: httpx.AsyncClient, trigger: str, body: dict[str, Any], field: str, message: str
) -> None:
    response = await replay_api.post(f"/workspaces/default/triggers/{trigger}/replay", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert message in error["message"]


async def test_only_kafka_and_s3_triggers_can_be_replayed(replay_api: httpx.AsyncClient) -> None:
    upstream = await replay_api.post(
        "/workspaces/default/triggers/after_up/replay", json={"from": T0, "to": T1}
    )
    assert upstream.status_code == 422
    assert upstream.json()["error"]["field"] == "name"
    assert "only kafka and s3 triggers" in upstream.json()["error"]["message"]
    missing = await replay_api.post(
        "/workspaces/default/triggers/nope/replay", json={"from": T0, "to": T1}
    )
    assert missing.status_code == 404
    assert (await replay_api.get("/workspaces/default/replays/12345")).status_code == 404


async def test_replays_are_listed_newest_first_per_trigger(replay_api: httpx.AsyncClient) -> None:
    made = []
    for trigger in ("orders_t", "files_t", "orders_t"):
        response = await replay_api.post(
            f"/workspaces/default/triggers/{trigger}/replay", json={"from": T0, "to": T1}
        )
        made.append(response.json()["replay_id"])
    first = (await replay_api.get("/workspaces/default/replays", params={"limit": 2})).json()
    assert [r["id"] for r in first["items"]] == [made[2], made[1]]
    rest = (
        await replay_api.get(
            "/workspaces/default/replays", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert ([r["id"] for r in rest["items"]], rest["next_cursor"]) == ([made[0]], None)
    orders = (
        await replay_api.get("/workspaces/default/replays", params={"trigger": "orders_t"})
    ).json()
    assert [(r["id"], r["trigger"]) for r in orders["items"]] == [
        (made[2], "orders_t"),
        (made[0], "orders_t"),
    ]
