"""Run and backfill requests at the edges: `Idempotency-Key` replays and conflicts, and business
dates written as DataWorks users write them, against a real server and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from shared.db import idempotency_keys
from tests.factories import shell_node
from tests.support.api import Pool

WS = "/workspaces/default"


async def published(api: httpx.AsyncClient, name: str = "wf") -> None:
    spec = {"name": name, "type": "manual", "nodes": [shell_node("a")]}
    response = await api.put(f"{WS}/workflows/{name}", json=spec, params={"publish": 1})
    assert response.is_success, response.text


async def scheduled_daily(api: httpx.AsyncClient, name: str = "daily") -> None:
    spec = {
        "name": name,
        "type": "scheduled",
        "schedule": {"cron": "0 2 * * *", "timezone": "Asia/Shanghai"},
        "nodes": [shell_node("a")],
    }
    response = await api.put(f"{WS}/workflows/{name}", json=spec, params={"publish": 1})
    assert response.is_success, response.text


async def count(pool: Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


# -------------------------------------------------------------------------- Idempotency-Key


async def test_the_same_key_answers_as_the_first_request_and_creates_nothing(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    body = {"parameters": {"region": "eu"}, "bizdate": "20260309"}
    first = await api.post(f"{WS}/workflows/wf/runs", json=body, headers=keyed("k-1"))
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    # The same request spelled differently (the other bizdate form) is the same request.
    again = await api.post(
        f"{WS}/workflows/wf/runs",
        json={"bizdate": "2026-03-09", "parameters": {"region": "eu"}},
        headers=keyed("k-1"),
    )
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await count(pool, "instances") == 1
    # Another key, or none, is another run.
    other = await api.post(f"{WS}/workflows/wf/runs", json=body, headers=keyed("k-2"))
    plain = await api.post(f"{WS}/workflows/wf/runs", json=body)
    ids = {first.json()["instance_id"], other.json()["instance_id"], plain.json()["instance_id"]}
    assert len(ids) == 3
    assert await count(pool, "instances") == 3


@pytest.mark.parametrize(
    "second",
    [
        {"path": "wf/runs", "body": {"parameters": {"region": "us"}}},
        {"path": "other/runs", "body": {"parameters": {"region": "eu"}}},
        {"path": "wf/runs", "body": {"parameters": {"region": "eu"}, "priority": 7}},
    ],
)
async def test_the_same_key_with_a_different_request_is_409_naming_the_key(
    api: httpx.AsyncClient, pool: Pool, second: dict[str, Any]
) -> None:
    await published(api)
    await published(api, "other")
    first = await api.post(
        f"{WS}/workflows/wf/runs", json={"parameters": {"region": "eu"}}, headers=keyed("reused")
    )
    assert first.status_code == 202, first.text
    response = await api.post(
        f"{WS}/workflows/{second['path']}", json=second["body"], headers=keyed("reused")
    )
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict" and error["field"] == "Idempotency-Key"
    assert "'reused'" in error["message"] and "different request" in error["message"]
    assert await count(pool, "instances") == 1


async def test_a_refused_request_leaves_no_key_so_its_retry_runs(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    missing = await api.post(f"{WS}/workflows/wf/runs", json={}, headers=keyed("early"))
    assert missing.status_code == 404
    assert await count(pool, "idempotency_keys") == 0
    await published(api)
    created = await api.post(f"{WS}/workflows/wf/runs", json={}, headers=keyed("early"))
    assert created.status_code == 202, created.text
    assert await count(pool, "instances") == 1


async def test_concurrent_requests_with_one_key_create_one_run(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    key = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(api.post(f"{WS}/workflows/wf/runs", json={}, headers=keyed(key)) for _ in range(8))
    )
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["instance_id"] for r in answers}) == 1
    assert await count(pool, "instances") == 1


async def test_keys_are_per_workspace_and_expire_after_24_hours(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await published(api)
    first = await api.post(f"{WS}/workflows/wf/runs", json={}, headers=keyed("day"))
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    # An expired key is a new request, even with another body.
    later = await api.post(f"{WS}/workflows/wf/runs", json={"priority": 7}, headers=keyed("day"))
    assert later.status_code == 202, later.text
    assert later.json()["instance_id"] != first.json()["instance_id"]
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    assert await idempotency_keys.prune(pool) == 1
    assert await count(pool, "idempotency_keys") == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "caf\u00e9"])
async def test_a_malformed_key_is_422_naming_the_header(
    api: httpx.AsyncClient, pool: Pool, key: str
) -> None:
    await published(api)
    response = await api.post(
        f"{WS}/workflows/wf/runs", json={}, headers={b"Idempotency-Key": key.encode()}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].lower() == "idempotency-key"
    assert await count(pool, "instances") == 0


async def test_a_backfill_with_a_used_key_answers_as_the_first_did(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await scheduled_daily(api)
    body = {"start": "20261101", "end": "20261103", "parallelism": 2}
    first = await api.post(f"{WS}/workflows/daily/backfill", json=body, headers=keyed("bf"))
    assert first.status_code == 202, first.text
    again = await api.post(f"{WS}/workflows/daily/backfill", json=body, headers=keyed("bf"))
    assert again.status_code == 202 and again.json() == first.json()
    assert await count(pool, "backfills") == 1 and await count(pool, "instances") == 3
    changed = await api.post(
        f"{WS}/workflows/daily/backfill", json={**body, "parallelism": 3}, headers=keyed("bf")
    )
    assert changed.status_code == 409
    assert await count(pool, "backfills") == 1


# ------------------------------------------------------------------------------- bizdates


@pytest.mark.parametrize("spelled", ["20260309", "2026-03-09"])
async def test_a_run_takes_a_bizdate_in_either_form(api: httpx.AsyncClient, spelled: str) -> None:
    await published(api)
    response = await api.post(f"{WS}/workflows/wf/runs", json={"bizdate": spelled})
    assert response.status_code == 202, response.text
    detail = (await api.get(f"{WS}/instances/{response.json()['instance_id']}")).json()
    assert detail["bizdate"] == "2026-03-09"
    # cyctime is the day after the bizdate (UTC workflow): ${bizdate} and $[...] agree.
    assert detail["cyctime"].startswith("2026-03-10")


@pytest.mark.parametrize("spelled", ["2026-3-9", "20261309", "yesterday", 1.5])
async def test_a_bad_bizdate_is_422_naming_the_field_and_the_forms(
    api: httpx.AsyncClient, pool: Pool, spelled: Any
) -> None:
    await published(api)
    response = await api.post(f"{WS}/workflows/wf/runs", json={"bizdate": spelled})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "bizdate"
    assert "yyyymmdd" in error["message"] or "calendar day" in error["message"]
    assert await count(pool, "instances") == 0


async def test_a_backfill_by_bizdates_runs_exactly_those_business_days(
    api: httpx.AsyncClient, pool: Pool
) -> None:
    await scheduled_daily(api)
    response = await api.post(
        f"{WS}/workflows/daily/backfill", json={"start": "20261101", "end": "2026-11-03"}
    )
    assert response.status_code == 202, response.text
    rows = await pool.fetch("SELECT bizdate FROM instances ORDER BY cyctime")
    assert [str(r["bizdate"]) for r in rows] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    bad = await api.post(
        f"{WS}/workflows/daily/backfill", json={"start": "2026-11-1", "end": "20261103"}
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "start"
