"""Backfills against real PostgreSQL: one instance per fire time with its own bizdate, run order,
the group as O&M sees it, terminate and rerun as a whole."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.executor.requests import carry_out
from services.scheduler.service import Scheduler
from shared.db import workflows as workflow_repo
from shared.db.errors import Invalid, NotFound
from shared.models.backfills import BackfillOut, BackfillRequest
from shared.operations.backfills import (
    MAX_BACKFILL_INSTANCES,
    backfill_instance_ids,
    create_backfill,
    get_backfill,
    list_backfills,
    rerun_backfill,
    terminate_backfill,
)
from tests.factories import DEFAULT_WS, shell_node, workflow
from tests.support.executor import running_executor, wait_for
from tests.support.scheduler import Pool, publish, scheduled, stored_instances, utc

NOW = utc("2026-11-21T03:00")
SHANGHAI = "Asia/Shanghai"


def request(start: str, end: str, **kw: Any) -> BackfillRequest:
    return BackfillRequest.model_validate({"start": start, "end": end, **kw})


async def backfill(pool: Pool, name: str, req: BackfillRequest, now: datetime = NOW) -> BackfillOut:
    async with pool.acquire() as conn:
        return await create_backfill(conn, DEFAULT_WS, name, req, now=now)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_ten_days_make_ten_instances_each_with_its_own_bizdate(
    pool: Pool, order: str
) -> None:
    await publish(pool, scheduled("daily_report", "0 0 2 ? * *", SHANGHAI))
    out = await backfill(
        pool,
        "daily_report",
        request(
            "2026-11-01T00:00:00+08:00",
            "2026-11-10T23:59:59+08:00",
            parallelism=2,
            priority=7,
            order=order,
        ),
    )
    assert (out.workflow, out.parallelism, out.priority, out.order) == (
        "daily_report",
        2,
        7,
        order,
    )
    assert out.states == {"waiting": 10}
    stored = await stored_instances(pool)
    assert [s.backfill_id for s in stored] == [out.id] * 10
    assert {(s.kind, s.state, s.priority, s.queue_priority) for s in stored} == {
        ("backfill", "waiting", 7, 7)
    }
    # 02:00 in Shanghai is 18:00 UTC the day before; bizdate is the day before the local date.
    days = [date(2026, 11, d) for d in range(1, 11)]
    if order == "desc":
        days.reverse()
    assert [s.cyctime for s in stored] == [
        datetime(d.year, d.month, d.day, 2, tzinfo=UTC) - timedelta(hours=8) for d in days
    ]
    assert [s.bizdate for s in stored] == [d - timedelta(days=1) for d in days]
    assert [s.run_key for s in stored] == [
        f"backfill:{out.id}@{s.cyctime:%Y-%m-%dT%H:%M:%SZ}" for s in stored
    ]
    # The ids come back in the order the executor starts them.
    ids = await pool.fetch("SELECT id FROM instances ORDER BY queue_priority DESC, created_at, id")
    assert out.instance_ids == [r["id"] for r in ids]
    row = await pool.fetchrow("SELECT * FROM backfills WHERE id = $1", out.id)
    assert row is not None
    assert (row["start_at"], row["end_at"], row["parallelism"], row["priority"]) == (
        utc("2026-10-31T16:00"),
        utc("2026-11-10T15:59:59"),
        2,
        7,
    )
    assert row["ordering"] == order


async def test_a_workflow_without_schedule_runs_once_per_day_at_midnight_in_its_zone(
    pool: Pool,
) -> None:
    await publish(pool, workflow("sync", type="manual", timezone=SHANGHAI))
    out = await backfill(
        pool, "sync", request("2026-11-01T00:00:00+08:00", "2026-11-03T12:00:00+08:00")
    )
    stored = await stored_instances(pool)
    assert len(out.instance_ids) == 3
    assert [(s.cyctime, s.bizdate) for s in stored] == [
        (utc("2026-10-31T16:00"), date(2026, 10, 31)),
        (utc("2026-11-01T16:00"), date(2026, 11, 1)),
        (utc("2026-11-02T16:00"), date(2026, 11, 2)),
    ]
    assert {s.priority for s in stored} == {None}
    assert {s.queue_priority for s in stored} == {1}  # the workflow's policy priority


async def test_fire_times_after_now_are_left_to_the_schedule(pool: Pool) -> None:
    await publish(pool, scheduled("daily_report", "0 0 2 ? * *", SHANGHAI))
    out = await backfill(
        pool,
        "daily_report",
        request("2026-11-19T00:00:00+08:00", "2026-11-30T00:00:00+08:00"),
        now=utc("2026-11-20T20:00"),  # 04:00 on the 21st in Shanghai
    )
    stored = await stored_instances(pool)
    assert [s.bizdate for s in stored] == [date(2026, 11, d) for d in (18, 19, 20)]
    assert out.end == datetime.fromisoformat("2026-11-30T00:00:00+08:00")


async def test_backfills_are_independent_of_each_other_and_of_the_schedule(pool: Pool) -> None:
    await publish(pool, scheduled("hourly", "0 * * * *"), at=utc("2026-11-20T00:30"))
    fired = await Scheduler(pool).tick(utc("2026-11-20T01:00:00.1"))
    req = request("2026-11-20T01:00:00Z", "2026-11-20T02:00:00Z")
    first, second = await backfill(pool, "hourly", req), await backfill(pool, "hourly", req)
    assert len(fired) == 1 and len(first.instance_ids) == len(second.instance_ids) == 2
    assert len(await stored_instances(pool)) == 5
    assert len(await stored_instances(pool, kind="backfill")) == 4


@pytest.mark.parametrize(
    ("name", "req", "error", "field", "message"),
    [
        pytest.param(
            "missing",
            request("2026-11-01T00:00Z", "2026-11-02T00:00Z"),
            NotFound,
            None,
            "workflow 'missing' not found",
            id="unknown-workflow",
        ),
        pytest.param(
            "draft_only",
            request("2026-11-01T00:00Z", "2026-11-02T00:00Z"),
            Invalid,
            "workflow",
            "no published version",
            id="unpublished",
        ),
        pytest.param(
            "daily_report",
            request("2026-11-01T03:00:00+08:00", "2026-11-02T01:00:00+08:00"),
            Invalid,
            "start",
            "no fire time of cron '0 0 2 ? * *' (Asia/Shanghai) between",
            id="no-fire-time-in-interval",
        ),
        pytest.param(
            "daily_report",
            request("2026-11-25T00:00:00+08:00", "2026-11-30T00:00:00+08:00"),
            Invalid,
            "start",
            "no fire time",
            id="interval-in-the-future",
        ),
        pytest.param(
            "every_second",
            request("2026-11-01T00:00:00Z", "2026-11-01T03:00:00Z"),
            Invalid,
            "end",
            f"more than {MAX_BACKFILL_INSTANCES} fire times",
            id="too-many-fire-times",
        ),
    ],
)
async def test_refused_backfills_create_nothing(
    pool: Pool,
    name: str,
    req: BackfillRequest,
    error: type[Exception],
    field: str | None,
    message: str,
) -> None:
    await publish(pool, scheduled("daily_report", "0 0 2 ? * *", SHANGHAI))
    await publish(pool, scheduled("every_second", "* * * * * ?"))
    async with pool.acquire() as conn:
        await workflow_repo.save(conn, DEFAULT_WS, scheduled("draft_only"))
    with pytest.raises(error, match=re.escape(message)) as raised:
        await backfill(pool, name, req)
    assert getattr(raised.value, "field", None) == field
    assert await pool.fetchval("SELECT count(*) FROM backfills") == 0
    assert await stored_instances(pool) == []


async def test_backfill_groups_are_listed_newest_first_with_state_counts(pool: Pool) -> None:
    await publish(pool, scheduled("a", "0 0 2 ? * *", SHANGHAI))
    await publish(pool, scheduled("b", "0 0 * * *"))
    one = await backfill(pool, "a", request("2026-11-01T00:00+08:00", "2026-11-03T00:00+08:00"))
    two = await backfill(pool, "b", request("2026-11-01T00:00Z", "2026-11-04T00:00Z"))
    three = await backfill(
        pool, "a", request("2026-11-05T00:00+08:00", "2026-11-06T00:00+08:00", order="desc")
    )
    await pool.execute("UPDATE instances SET state = 'failed' WHERE id = $1", two.instance_ids[0])
    async with pool.acquire() as conn:
        listed = await list_backfills(conn, DEFAULT_WS)
        assert [b.id for b in listed] == [three.id, two.id, one.id]
        assert [b.id for b in await list_backfills(conn, DEFAULT_WS, workflow="a")] == [
            three.id,
            one.id,
        ]
        assert [b.id for b in await list_backfills(conn, DEFAULT_WS, before=three.id, limit=1)] == [
            two.id
        ]
        got = await get_backfill(conn, DEFAULT_WS, two.id)
        assert got.states == {"failed": 1, "waiting": 3}
        assert got.instance_ids == two.instance_ids
        assert (got.start, got.end, got.order) == (two.start, two.end, "asc")
        assert (await get_backfill(conn, DEFAULT_WS, three.id)).instance_ids == three.instance_ids
        with pytest.raises(NotFound):
            await get_backfill(conn, DEFAULT_WS, 999)
        ws = await pool.fetchval("INSERT INTO workspaces (name) VALUES ('other') RETURNING id")
        with pytest.raises(NotFound):
            await get_backfill(conn, ws, one.id)
        assert await list_backfills(conn, ws) == []
        assert await backfill_instance_ids(conn, DEFAULT_WS, two.id, states={"failed"}) == [
            two.instance_ids[0]
        ]
        with pytest.raises(NotFound):
            await backfill_instance_ids(conn, ws, two.id)


async def test_a_backfill_is_terminated_and_rerun_as_a_whole(pool: Pool) -> None:
    await publish(pool, scheduled("daily", "0 0 * * *"))
    out = await backfill(pool, "daily", request("2026-11-01T00:00Z", "2026-11-04T00:00Z"))
    other = await backfill(pool, "daily", request("2026-11-10T00:00Z", "2026-11-11T00:00Z"))
    running = out.instance_ids[0]
    await pool.execute("UPDATE instances SET state = 'running' WHERE id = $1", running)
    async with pool.acquire() as conn:
        terminated = await terminate_backfill(conn, DEFAULT_WS, out.id)
        assert sorted(terminated) == sorted(out.instance_ids)
        assert terminated[-1] == running  # waiting ones first: no freed slot is handed on
        # Requests, carried out by an executor in the order asked.
        assert (await get_backfill(conn, DEFAULT_WS, out.id)).states == {"waiting": 3, "running": 1}
        carried = await carry_out(conn)
        assert [o.instance_id for o in carried] == terminated
        assert {o.state for o in carried} == {"done"}
        assert (await get_backfill(conn, DEFAULT_WS, out.id)).states == {"terminated": 4}
        assert (await get_backfill(conn, DEFAULT_WS, other.id)).states == {"waiting": 2}
        assert await terminate_backfill(conn, DEFAULT_WS, out.id) == []
        nodes = await pool.fetch(
            "SELECT DISTINCT state FROM node_instances WHERE instance_id = ANY($1::bigint[])",
            out.instance_ids,
        )
        assert [n["state"] for n in nodes] == ["terminated"]

        assert await rerun_backfill(conn, DEFAULT_WS, out.id) == out.instance_ids
        assert {o.state for o in await carry_out(conn)} == {"done"}
        after = await get_backfill(conn, DEFAULT_WS, out.id)
        assert after.states == {"waiting": 4}
        assert after.instance_ids == out.instance_ids  # same run order as before
        assert await rerun_backfill(conn, DEFAULT_WS, out.id) == []  # nothing has ended
        with pytest.raises(Invalid):
            await rerun_backfill(conn, DEFAULT_WS, out.id, "some")  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await terminate_backfill(conn, DEFAULT_WS, 999)


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals [start, end) open at one instant."""
    # At equal instants an end sorts before a start: a slot freed and taken in one go is no overlap.
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_ten_days_with_parallelism_2_never_run_more_than_2_in_order(
    db_url: str, pool: Pool, order: str
) -> None:
    """A real executor runs a 10-day backfill of a daily report: never more than 2 instances
    running at once (but 2 at times), started in the requested order, each with its own
    bizdate."""
    node = shell_node("report", code="sleep 0.3")
    await publish(pool, scheduled("daily_report", "0 0 2 ? * *", SHANGHAI, nodes=[node]))
    out = await backfill(
        pool,
        "daily_report",
        request(
            "2026-11-01T00:00:00+08:00",
            "2026-11-10T23:59:59+08:00",
            parallelism=2,
            order=order,
        ),
    )
    async with running_executor(db_url):
        await wait_for(
            pool,
            "SELECT count(*) = 10 FROM instances WHERE backfill_id = $1 AND state = 'succeeded'",
            out.id,
        )
    rows = await pool.fetch(
        "SELECT id, cyctime, bizdate, started_at, finished_at FROM instances "
        "WHERE backfill_id = $1 ORDER BY started_at, id",
        out.id,
    )
    assert _max_overlap([(r["started_at"], r["finished_at"]) for r in rows]) == 2
    # Started in run order; instances promoted by one statement may swap among themselves.
    for position, row in enumerate(rows):
        assert abs(out.instance_ids.index(row["id"]) - position) < 2
    first = sorted(r["cyctime"] for r in rows[:2])
    days = sorted(r["cyctime"] for r in rows)
    assert first == (days[:2] if order == "asc" else days[-2:])
    local_days = [r["cyctime"].astimezone(ZoneInfo(SHANGHAI)).date() for r in rows]
    assert sorted(local_days) == [date(2026, 11, d) for d in range(1, 11)]
    assert [r["bizdate"] for r in rows] == [d - timedelta(days=1) for d in local_days]
