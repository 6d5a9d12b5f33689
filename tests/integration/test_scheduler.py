"""The scheduler against real PostgreSQL: exactly-once fires across replicas, misfire policies,
freeze, republish, and the service loop waking on NOTIFY."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.service import Fired, Scheduler, run
from services.scheduler.service import Q as service_queries
from shared.cron import fires_between
from shared.db import workflows as workflow_repo
from shared.settings import load_settings
from tests.factories import DEFAULT_WS, workflow
from tests.support.scheduler import (
    Pool,
    eventually,
    publish,
    scheduled,
    state_of,
    stored_instances,
    utc,
)

NY = "America/New_York"


def keys(fired: list[Fired]) -> list[datetime]:
    return sorted(f.fire_time for f in fired)


async def test_a_fire_creates_one_waiting_scheduled_instance_with_its_bizdate(pool: Pool) -> None:
    spec = scheduled("daily_report", "0 0 2 ? * *", "Asia/Shanghai", policy={"priority": 5})
    workflow_id = await publish(pool, spec, at=utc("2026-11-19T12:00"))
    scheduler = Scheduler(pool)
    assert await scheduler.tick(utc("2026-11-19T12:00:01")) == []
    [fired] = await scheduler.tick(utc("2026-11-19T18:00:00.01"))
    assert (fired.workflow, fired.fire_time, fired.state) == (
        "daily_report",
        utc("2026-11-19T18:00"),
        "waiting",
    )
    row = await pool.fetchrow(
        "SELECT kind, state, version, cyctime, bizdate, run_key, queue_priority, priority "
        "FROM instances WHERE id = $1",
        fired.instance_id,
    )
    assert row is not None
    assert dict(row) == {
        "kind": "scheduled",
        "state": "waiting",
        "version": 1,
        "cyctime": utc("2026-11-19T18:00"),  # 02:00 on the 20th in Shanghai
        "bizdate": date(2026, 11, 19),
        "run_key": "schedule@2026-11-19T18:00:00Z",
        "queue_priority": 5,
        "priority": None,
    }
    nodes = await pool.fetch(
        "SELECT state FROM node_instances WHERE instance_id = $1", fired.instance_id
    )
    assert [n["state"] for n in nodes] == ["pending"]
    state = await state_of(pool, workflow_id)
    assert state is not None
    assert state["last_fire_at"] == utc("2026-11-19T18:00:00.01")
    assert state["next_fire_at"] == utc("2026-11-20T18:00")
    assert await scheduler.next_due() == utc("2026-11-20T18:00")


async def test_a_new_schedule_does_not_backfill_the_past(pool: Pool) -> None:
    spec = scheduled("hourly", "0 * * * *", start_at=datetime(2026, 1, 1, tzinfo=UTC))
    await publish(pool, spec, at=utc("2026-03-10T10:20"))
    scheduler = Scheduler(pool)
    assert await scheduler.tick(utc("2026-03-10T10:20:00.5")) == []
    assert keys(await scheduler.tick(utc("2026-03-10T11:00:00.2"))) == [utc("2026-03-10T11:00")]
    assert len(await stored_instances(pool)) == 1


SIMULATED_DAYS = [
    pytest.param("0 */5 * * * ?", "UTC", "2026-03-10", 288, id="every-5-minutes-quartz"),
    pytest.param("0 * * * *", NY, "2026-11-01", 25, id="hourly-ny-fall-back"),
    pytest.param("0 * * * *", NY, "2026-03-08", 23, id="hourly-ny-spring-forward"),
    pytest.param("30 2 * * *", NY, "2026-03-08", 1, id="daily-in-the-spring-gap"),
    pytest.param("0 0 2 ? * *", "Asia/Shanghai", "2026-11-20", 1, id="daily-2am-shanghai"),
]


@pytest.mark.parametrize(("cron", "zone", "day", "count"), SIMULATED_DAYS)
async def test_two_schedulers_over_a_simulated_day_fire_each_time_exactly_once(
    pool: Pool,
    second_pool: Pool,
    cron: str,
    zone: str,
    day: str,
    count: int,
) -> None:
    """Two replicas with their own connections and slightly different clocks tick concurrently
    at every fire time and in between; each is down for a few hours. Every fire time of the day
    is created exactly once, by one of them, on time."""
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    end = start + timedelta(days=1)
    expected = fires_between(cron, zone, start, end)
    assert len(expected) == count
    workflow_id = await publish(pool, scheduled("wf", cron, zone, misfire="skip"), at=start)
    replicas = [Scheduler(pool), Scheduler(second_pool)]
    skews = [timedelta(0), timedelta(milliseconds=-7)]
    down = [
        (start + timedelta(hours=5), start + timedelta(hours=9)),
        (start + timedelta(hours=14), start + timedelta(hours=16)),
    ]
    rng = random.Random(day + cron)
    instants = sorted(
        {*expected}
        | {f + timedelta(milliseconds=rng.randint(1, 900)) for f in expected}
        | {start + timedelta(minutes=rng.uniform(0, 1440)) for _ in range(60)}
    )
    fired: list[list[Fired]] = [[], []]

    async def tick(index: int, at: datetime) -> None:
        low, high = down[index]
        if not low <= at < high:
            fired[index].extend(await replicas[index].tick(at + skews[index]))

    for at in [*instants, end]:
        await asyncio.gather(tick(0, at), tick(1, at))

    both = fired[0] + fired[1]
    assert keys(both) == expected  # each fire time once: none missed, none made twice
    assert {f.workflow_id for f in both} == {workflow_id}
    stored = await stored_instances(pool)
    assert sorted(s.cyctime for s in stored) == expected
    assert all(s.run_key == f"schedule@{s.cyctime:%Y-%m-%dT%H:%M:%SZ}" for s in stored)
    assert all(
        s.bizdate == s.cyctime.astimezone(ZoneInfo(zone)).date() - timedelta(1) for s in stored
    )


OUTAGES = [
    pytest.param("run_once", ["2026-03-10T06:00"], id="run_once"),
    pytest.param(
        "run_all",
        [
            "2026-03-10T02:00",
            "2026-03-10T03:00",
            "2026-03-10T04:00",
            "2026-03-10T05:00",
            "2026-03-10T06:00",
        ],
        id="run_all",
    ),
    pytest.param("skip", [], id="skip"),
]


@pytest.mark.parametrize(("misfire", "expected"), OUTAGES)
async def test_misfire_policy_after_an_outage(
    pool: Pool, misfire: str, expected: list[str]
) -> None:
    """Hourly schedule, last settled at 01:00:00.3; no scheduler runs until 06:20."""
    await publish(pool, scheduled("wf", "0 * * * *", misfire=misfire), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    assert keys(await scheduler.tick(utc("2026-03-10T01:00:00.3"))) == [utc("2026-03-10T01:00")]
    after = await scheduler.tick(utc("2026-03-10T06:20"))
    assert keys(after) == [utc(t) for t in expected]
    # The outage is settled: nothing more until the next fire time, which fires normally.
    assert await scheduler.tick(utc("2026-03-10T06:40")) == []
    assert keys(await scheduler.tick(utc("2026-03-10T07:00:00.1"))) == [utc("2026-03-10T07:00")]
    assert len(await stored_instances(pool)) == 2 + len(expected)


async def test_run_all_is_capped_to_the_most_recent_fire_times(pool: Pool) -> None:
    await publish(pool, scheduled("wf", "*/10 * * * *", misfire="run_all"), at=utc("2026-03-10"))
    scheduler = Scheduler(pool, cap=5)
    await scheduler.tick(utc("2026-03-10T00:00:00.5"))
    after = await scheduler.tick(utc("2026-03-10T12:00:30"))  # 71 late + 12:00 on time
    assert keys(after) == [
        utc(t)
        for t in (
            "2026-03-10T11:10",
            "2026-03-10T11:20",
            "2026-03-10T11:30",
            "2026-03-10T11:40",
            "2026-03-10T11:50",
            "2026-03-10T12:00",
        )
    ]


async def test_frozen_schedules_fire_nothing_and_unfreezing_does_not_replay(pool: Pool) -> None:
    workflow_id = await publish(pool, scheduled("wf", "0 * * * *"), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    assert len(await scheduler.tick(utc("2026-03-10T01:00:00.1"))) == 1
    async with pool.acquire() as conn:
        await workflow_repo.set_frozen(conn, DEFAULT_WS, "wf", True)
    assert await scheduler.tick(utc("2026-03-10T02:00:00.1")) == []
    assert await scheduler.tick(utc("2026-03-10T03:00:00.1")) == []
    async with pool.acquire() as conn:
        await workflow_repo.set_frozen(conn, DEFAULT_WS, "wf", False)
    assert await scheduler.tick(utc("2026-03-10T03:20")) == []
    assert keys(await scheduler.tick(utc("2026-03-10T04:00:00.1"))) == [utc("2026-03-10T04:00")]
    state = await state_of(pool, workflow_id)
    assert state is not None and state["next_fire_at"] == utc("2026-03-10T05:00")


async def test_a_changed_schedule_starts_over_at_its_publish(pool: Pool) -> None:
    workflow_id = await publish(pool, scheduled("wf", "0 * * * *"), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    assert len(await scheduler.tick(utc("2026-03-10T01:00:00.1"))) == 1
    # Republished at 03:10 with another cron while no scheduler ran since 01:00.
    await publish(pool, scheduled("wf", "30 * * * *"), at=utc("2026-03-10T03:10"))
    assert await scheduler.tick(utc("2026-03-10T03:10:00.5")) == []
    assert keys(await scheduler.tick(utc("2026-03-10T03:30:00.1"))) == [utc("2026-03-10T03:30")]
    state = await state_of(pool, workflow_id)
    assert state is not None and state["schedule"]["cron"] == "30 * * * *"


async def test_republishing_the_same_schedule_keeps_its_watermark(pool: Pool) -> None:
    await publish(pool, scheduled("wf", "0 * * * *"), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    # New node code, same schedule, published while no scheduler ran: 02:00 is still owed.
    spec = scheduled("wf", "0 * * * *", nodes=[{"name": "b", "type": "shell", "code": "echo"}])
    await publish(pool, spec, at=utc("2026-03-10T02:10"))
    assert keys(await scheduler.tick(utc("2026-03-10T02:10:01"))) == [utc("2026-03-10T02:00")]
    [instance] = await stored_instances(pool)
    assert instance.cyctime == utc("2026-03-10T02:00")


async def test_a_schedule_that_was_manual_for_a_while_starts_over(pool: Pool) -> None:
    workflow_id = await publish(pool, scheduled("wf", "0 * * * *"), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    await publish(pool, workflow("wf", type="manual"))
    assert await scheduler.tick(utc("2026-03-10T01:00:00.1")) == []
    state = await state_of(pool, workflow_id)
    assert state is not None and (state["last_fire_at"], state["next_fire_at"]) == (None, None)
    await publish(pool, scheduled("wf", "0 * * * *"), at=utc("2026-03-10T05:10"))
    assert await scheduler.tick(utc("2026-03-10T05:10:01")) == []
    assert await stored_instances(pool) == []
    assert keys(await scheduler.tick(utc("2026-03-10T06:00:00.1"))) == [utc("2026-03-10T06:00")]


async def test_end_at_ends_the_schedule(pool: Pool) -> None:
    spec = scheduled("wf", "0 * * * *", end_at=datetime(2026, 3, 10, 2, tzinfo=UTC))
    workflow_id = await publish(pool, spec, at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    assert len(await scheduler.tick(utc("2026-03-10T01:00:00.1"))) == 1
    assert len(await scheduler.tick(utc("2026-03-10T02:00:00.1"))) == 1
    state = await state_of(pool, workflow_id)
    assert state is not None and state["next_fire_at"] is None
    assert await scheduler.tick(utc("2026-03-10T09:00")) == []
    assert await scheduler.next_due() is None


async def test_unpublished_and_unscheduled_workflows_never_fire(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await workflow_repo.save(conn, DEFAULT_WS, scheduled("draft", "* * * * *"))
    await publish(pool, workflow("manual", type="manual"))
    scheduler = Scheduler(pool)
    assert await scheduler.tick(utc("2026-03-10T00:00")) == []
    assert await scheduler.tick(utc("2026-03-10T05:00")) == []
    rows = await pool.fetch(
        "SELECT w.name, s.version, s.last_fire_at, s.next_fire_at "
        "FROM schedule_state s JOIN workflows w ON w.id = s.workflow_id"
    )
    # The manual workflow's publish is remembered as seen, with nothing to fire.
    assert [tuple(r) for r in rows] == [("manual", 1, None, None)]
    assert await scheduler.next_due() is None
    # Seen at this version: later ticks do not read its spec again.
    due = await pool.fetch(service_queries["due_schedules"], utc("2026-03-11T00:00"), 100, [])
    assert due == []


async def test_many_due_schedules_are_settled_in_batches(pool: Pool) -> None:
    for index in range(7):
        await publish(pool, scheduled(f"wf{index}", "0 * * * *"), at=utc("2026-03-10T00:30"))
    scheduler = Scheduler(pool, batch=3)
    await scheduler.tick(utc("2026-03-10T00:30:01"))
    fired = await scheduler.tick(utc("2026-03-10T01:00:00.1"))
    assert sorted(f.workflow for f in fired) == [f"wf{i}" for i in range(7)]


async def test_the_service_wakes_on_publish_and_at_the_next_fire_time(
    db_url: str, pool: Pool
) -> None:
    """The poll interval is a minute: instances within seconds of the publish prove the loop
    woke on NOTIFY, then slept only until each next fire time."""
    settings = load_settings(database_url=db_url, poll_interval_s=60)
    stop = asyncio.Event()
    service = asyncio.create_task(run(settings, stop))

    async def listening() -> bool:
        query = await pool.fetchval(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'sluice-scheduler-listen'"
        )
        return query is not None and query.startswith("LISTEN")

    async def fired_twice() -> bool:
        return len(await stored_instances(pool)) >= 2

    try:
        await eventually(listening)
        await publish(pool, scheduled("every_second", "* * * * * ?"))
        await eventually(fired_twice)
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=10)
    stored = await stored_instances(pool)
    assert {i.kind for i in stored} == {"scheduled"}
    runs = sorted(i.cyctime for i in stored)
    assert runs == [runs[0] + timedelta(seconds=n) for n in range(len(runs))]  # no gap, no twice
