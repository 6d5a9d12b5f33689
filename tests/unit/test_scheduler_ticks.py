"""The scheduler's pure decisions: what is due, misfire policies, bizdate, backfill fire times."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.ticks import decide
from shared.cron import fires_between
from shared.fire_times import backfill_run_key, backfill_times, bizdate_of, schedule_run_key
from shared.models.workflows import Schedule
from tests.factories import workflow
from tests.support.scheduler import scheduled, utc

NY = "America/New_York"


def show(instants: tuple[datetime, ...] | list[datetime]) -> list[str]:
    return [i.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") for i in instants]


def schedule(cron: str, timezone: str = "UTC", **kw: Any) -> Schedule:
    return Schedule.model_validate({"cron": cron, "timezone": timezone, **kw})


# Each case: the schedule, the stored bookkeeping, now -> fires, next fire, late, dropped.
DECIDE_CASES = [
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": None, "changed_at": "2026-03-10T12:00"},
        "2026-03-10T12:00:05",
        [],
        "2026-03-11T02:00:00",
        (0, 0),
        id="new-schedule-does-not-backfill-the-past",
    ),
    pytest.param(
        schedule("0 2 * * *", start_at="2026-01-01T00:00:00+00:00"),
        {"last_fire_at": None, "changed_at": "2026-03-10T12:00"},
        "2026-03-10T12:00:05",
        [],
        "2026-03-11T02:00:00",
        (0, 0),
        id="new-schedule-with-past-start-at-starts-at-publish",
    ),
    pytest.param(
        schedule("0 2 * * *", start_at="2026-03-20T00:00:00+00:00"),
        {"last_fire_at": None, "changed_at": "2026-03-10T12:00"},
        "2026-03-10T12:00:05",
        [],
        "2026-03-20T02:00:00",
        (0, 0),
        id="future-start-at-is-the-first-fire",
    ),
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": None, "changed_at": "2026-03-10T12:00"},
        "2026-03-09T12:00:00",
        [],
        "2026-03-10T02:00:00",
        (0, 0),
        id="publish-time-ahead-of-this-clock-starts-now",
    ),
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": None, "changed_at": "2026-03-07T12:00"},
        "2026-03-10T12:00:00",
        ["2026-03-10T02:00:00"],
        "2026-03-11T02:00:00",
        (3, 2),
        id="published-while-no-scheduler-ran-run-once-latest",
    ),
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": "2026-03-10T01:59:58"},
        "2026-03-10T02:00:00.003",
        ["2026-03-10T02:00:00"],
        "2026-03-11T02:00:00",
        (0, 0),
        id="on-time",
    ),
    pytest.param(
        schedule("0 2 * * *", misfire="skip"),
        {"last_fire_at": "2026-03-10T01:59:58"},
        "2026-03-10T02:00:59",
        ["2026-03-10T02:00:00"],
        "2026-03-11T02:00:00",
        (0, 0),
        id="late-wake-within-grace-fires-even-with-skip",
    ),
    pytest.param(
        schedule("0 2 * * *", misfire="skip"),
        {"last_fire_at": "2026-03-10T01:59:58"},
        "2026-03-10T02:01:01",
        [],
        "2026-03-11T02:00:00",
        (1, 1),
        id="beyond-grace-is-a-misfire",
    ),
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": "2026-03-10T02:00:00"},
        "2026-03-10T02:00:00.5",
        [],
        "2026-03-11T02:00:00",
        (0, 0),
        id="a-fire-at-the-watermark-is-already-accounted",
    ),
    pytest.param(
        schedule("0 * * * *", misfire="run_once"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T05:00:00.5",
        ["2026-03-10T04:00:00", "2026-03-10T05:00:00"],
        "2026-03-10T06:00:00",
        (4, 3),
        id="outage-run-once-latest-missed-plus-on-time",
    ),
    pytest.param(
        schedule("0 * * * *", misfire="run_all"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T05:00:00.5",
        [f"2026-03-10T0{h}:00:00" for h in range(1, 6)],
        "2026-03-10T06:00:00",
        (4, 0),
        id="outage-run-all",
    ),
    pytest.param(
        schedule("0 * * * *", misfire="skip"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T05:00:00.5",
        ["2026-03-10T05:00:00"],
        "2026-03-10T06:00:00",
        (4, 4),
        id="outage-skip-keeps-only-on-time",
    ),
    pytest.param(
        schedule("0 * * * *", misfire="run_once"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T05:30:00",
        ["2026-03-10T05:00:00"],
        "2026-03-10T06:00:00",
        (5, 4),
        id="outage-run-once-nothing-on-time",
    ),
    pytest.param(
        schedule("0 * * * *", misfire="skip"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T05:30:00",
        [],
        "2026-03-10T06:00:00",
        (5, 5),
        id="outage-skip-nothing-on-time",
    ),
    pytest.param(
        schedule("* * * * *", misfire="run_all"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T02:00:30",
        [f"2026-03-10T01:{m:02d}:00" for m in range(10, 60)] + ["2026-03-10T02:00:00"],
        "2026-03-10T02:01:00",
        (51, 1),
        id="run-all-cap-keeps-the-most-recent",
    ),
    pytest.param(
        schedule("* * * * *", misfire="run_once"),
        {"last_fire_at": "2026-03-10T00:00:00"},
        "2026-03-10T02:00:30",
        ["2026-03-10T01:59:00", "2026-03-10T02:00:00"],
        "2026-03-10T02:01:00",
        (51, 50),
        id="run-once-over-cap-still-the-latest",
    ),
    pytest.param(
        schedule("0 * * * *"),
        {"last_fire_at": "2026-03-10T00:00:00", "frozen": True},
        "2026-03-10T05:00:00.5",
        [],
        "2026-03-10T06:00:00",
        (0, 5),
        id="frozen-fires-nothing-and-moves-on",
    ),
    pytest.param(
        schedule("0 * * * *"),
        {
            "last_fire_at": "2026-03-10T02:00:00",
            "same_schedule": False,
            "changed_at": "2026-03-10T10:00",
        },
        "2026-03-10T10:00:01",
        [],
        "2026-03-10T11:00:00",
        (0, 0),
        id="changed-schedule-starts-over-at-publish",
    ),
    pytest.param(
        schedule("0 * * * *"),
        {"last_fire_at": "2026-03-10T02:00:00", "changed_at": "2026-03-10T10:00"},
        "2026-03-10T10:00:01",
        ["2026-03-10T09:00:00", "2026-03-10T10:00:00"],
        "2026-03-10T11:00:00",
        (7, 6),
        id="same-schedule-after-outage-is-a-misfire",
    ),
    pytest.param(
        schedule("0 * * * *"),
        {
            "last_fire_at": "2026-03-10T12:00:00",
            "same_schedule": False,
            "changed_at": "2026-03-10T10:00",
        },
        "2026-03-10T12:30:00",
        [],
        "2026-03-10T13:00:00",
        (0, 0),
        id="changed-schedule-never-rewinds-the-watermark",
    ),
    pytest.param(
        schedule("0 2 * * *"),
        {"last_fire_at": "2026-03-10T02:00:05"},
        "2026-03-10T02:00:02",
        [],
        "2026-03-11T02:00:00",
        (0, 0),
        id="clock-behind-the-watermark-fires-nothing",
    ),
    pytest.param(
        schedule("0 2 * * *", end_at="2026-03-09T00:00:00+00:00"),
        {"last_fire_at": "2026-03-08T02:00:00"},
        "2026-03-10T12:00:00",
        [],
        None,
        (0, 0),
        id="after-end-at-nothing-and-no-next",
    ),
    pytest.param(
        schedule("30 2 * * *", NY),
        {"last_fire_at": "2026-03-07T07:30:00"},
        "2026-03-08T07:00:10",
        ["2026-03-08T07:00:00"],
        "2026-03-09T06:30:00",
        (0, 0),
        id="dst-spring-skipped-time-fires-at-gap-end",
    ),
    pytest.param(
        schedule("30 1 * * *", NY),
        {"last_fire_at": "2026-11-01T05:30:00"},
        "2026-11-01T06:30:10",
        [],
        "2026-11-02T06:30:00",
        (0, 0),
        id="dst-fall-repeated-time-does-not-fire-twice",
    ),
    pytest.param(
        schedule("0 0 2 ? * *", "Asia/Shanghai"),
        {"last_fire_at": "2026-11-20T17:59:59"},
        "2026-11-20T18:00:00.2",
        ["2026-11-20T18:00:00"],
        "2026-11-21T18:00:00",
        (0, 0),
        id="quartz-daily-2am-shanghai",
    ),
]


@pytest.mark.parametrize(("sched", "state", "now", "fires", "following", "counts"), DECIDE_CASES)
def test_decide(
    sched: Schedule,
    state: dict[str, Any],
    now: str,
    fires: list[str],
    following: str | None,
    counts: tuple[int, int],
) -> None:
    last = state.get("last_fire_at")
    tick = decide(
        sched,
        last_fire_at=None if last is None else utc(last),
        same_schedule=state.get("same_schedule", True),
        frozen=state.get("frozen", False),
        changed_at=utc(state.get("changed_at", "2026-01-01T00:00")),
        now=utc(now),
        cap=50,
    )
    assert show(tick.fires) == fires
    assert tick.next_fire == (None if following is None else utc(following))
    assert (tick.late, tick.dropped) == counts
    assert tick.watermark >= utc(now)


@pytest.mark.parametrize("frozen", [False, True])
def test_the_watermark_moves_to_now_or_stays_ahead(frozen: bool) -> None:
    sched = schedule("0 * * * *")
    kw: dict[str, Any] = {"same_schedule": True, "frozen": frozen, "changed_at": utc("2026-01-01")}
    moved = decide(sched, last_fire_at=utc("2026-03-10T00:00"), now=utc("2026-03-10T05:00"), **kw)
    assert moved.watermark == utc("2026-03-10T05:00")
    ahead = decide(sched, last_fire_at=utc("2026-03-10T06:00"), now=utc("2026-03-10T05:00"), **kw)
    assert ahead.watermark == utc("2026-03-10T06:00")


SIMULATED_DAYS = [
    pytest.param("0 */5 * * * ?", "UTC", "2026-03-10", 288, id="every-5-minutes"),
    pytest.param("0 * * * *", NY, "2026-11-01", 25, id="hourly-ny-fall-back-25-hours"),
    pytest.param("0 * * * *", NY, "2026-03-08", 23, id="hourly-ny-spring-forward-23-hours"),
    pytest.param("30 2 * * *", NY, "2026-03-08", 1, id="daily-in-the-spring-gap"),
    pytest.param("30 1 * * *", NY, "2026-11-01", 1, id="daily-in-the-fall-repeat"),
    pytest.param("*/30 * * * * ?", "UTC", "2026-03-10", 2880, id="every-30-seconds"),
    pytest.param("0 0 2 ? * *", "Asia/Shanghai", "2026-11-20", 1, id="quartz-2am-shanghai"),
]


@pytest.mark.parametrize(("cron", "zone", "day", "count"), SIMULATED_DAYS)
def test_a_simulated_day_fires_each_time_exactly_once(
    cron: str, zone: str, day: str, count: int
) -> None:
    """Feed each decision's watermark into the next, waking at irregular times within the
    grace (a scheduler wakes a little late): every fire time of the day fires once, on time."""
    sched = schedule(cron, zone)
    rng = random.Random(day + cron)
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    end = start + timedelta(days=1)
    expected = fires_between(cron, zone, start, end)
    assert len(expected) == count
    now, watermark = start, start
    fired: list[datetime] = []
    while now < end:
        tick = decide(
            sched,
            last_fire_at=watermark,
            same_schedule=True,
            frozen=False,
            changed_at=start,
            now=now,
        )
        assert (tick.late, tick.dropped) == (0, 0)
        fired.extend(tick.fires)
        watermark = tick.watermark
        step = rng.uniform(0.05, 50.0)
        if tick.next_fire is not None:
            # Wake at the next fire time, or a little after it, as the service loop does.
            step = min(step, (tick.next_fire - now).total_seconds() + rng.uniform(0, 3))
        now = min(now + timedelta(seconds=max(step, 0.001)), end)
    fired.extend(
        decide(
            sched,
            last_fire_at=watermark,
            same_schedule=True,
            frozen=False,
            changed_at=start,
            now=end,
        ).fires
    )
    assert fired == expected


@pytest.mark.parametrize(
    ("cyctime", "zone", "bizdate"),
    [
        ("2026-11-20T18:00", "Asia/Shanghai", date(2026, 11, 20)),  # 02:00 CST on the 21st
        ("2026-11-20T18:00", "UTC", date(2026, 11, 19)),
        ("2026-11-20T15:59:59", "Asia/Shanghai", date(2026, 11, 19)),
        ("2026-03-08T07:00", NY, date(2026, 3, 7)),  # 03:00 EDT, just after the gap
        ("2026-11-01T06:30", NY, date(2026, 10, 31)),  # 01:30 EST, the repeated hour
        ("2026-01-01T00:00", "UTC", date(2025, 12, 31)),
        ("2024-03-01T00:00", "UTC", date(2024, 2, 29)),
        ("2026-03-08T05:00", "America/Havana", date(2026, 3, 7)),  # midnight skipped: 01:00
    ],
)
def test_bizdate_is_the_day_before_in_the_zone(cyctime: str, zone: str, bizdate: date) -> None:
    assert bizdate_of(utc(cyctime), zone) == bizdate


def test_run_keys_name_the_fire_time_in_utc() -> None:
    fire = datetime.fromisoformat("2026-11-21T02:00:00+08:00")
    assert schedule_run_key(fire) == "schedule@2026-11-20T18:00:00Z"
    assert backfill_run_key(7, fire) == "backfill:7@2026-11-20T18:00:00Z"
    assert schedule_run_key(fire) != schedule_run_key(fire + timedelta(seconds=1))


BACKFILL_CASES = [
    pytest.param(
        scheduled(cron="0 0 2 ? * *", timezone="Asia/Shanghai"),
        "2026-11-01T00:00:00+08:00",
        "2026-11-03T23:59:59+08:00",
        ["2026-10-31T18:00:00", "2026-11-01T18:00:00", "2026-11-02T18:00:00"],
        id="scheduled-daily-2am-shanghai",
    ),
    pytest.param(
        scheduled(cron="0 0 2 ? * *", timezone="Asia/Shanghai"),
        "2026-11-01T02:00:00+08:00",
        "2026-11-03T02:00:00+08:00",
        ["2026-10-31T18:00:00", "2026-11-01T18:00:00", "2026-11-02T18:00:00"],
        id="bounds-are-inclusive",
    ),
    pytest.param(
        scheduled(
            cron="0 0 2 ? * *",
            start_at=datetime(2026, 12, 1, tzinfo=UTC),
            end_at=datetime(2026, 12, 31, tzinfo=UTC),
        ),
        "2026-11-01T00:00:00+00:00",
        "2026-11-02T23:00:00+00:00",
        ["2026-11-01T02:00:00", "2026-11-02T02:00:00"],
        id="schedule-bounds-do-not-limit-a-backfill",
    ),
    pytest.param(
        workflow("manual_job", type="manual", timezone="Asia/Shanghai"),
        "2026-11-01T00:00:00+08:00",
        "2026-11-03T12:00:00+08:00",
        ["2026-10-31T16:00:00", "2026-11-01T16:00:00", "2026-11-02T16:00:00"],
        id="no-schedule-daily-midnight-in-zone",
    ),
    pytest.param(
        workflow("triggered_job"),
        "2026-11-01T00:00:00+00:00",
        "2026-11-02T00:00:00+00:00",
        ["2026-11-01T00:00:00", "2026-11-02T00:00:00"],
        id="no-schedule-utc-by-default",
    ),
    pytest.param(
        workflow("havana_job", type="manual", timezone="America/Havana"),
        "2026-03-07T00:00:00-05:00",
        "2026-03-09T12:00:00-04:00",
        ["2026-03-07T05:00:00", "2026-03-08T05:00:00", "2026-03-09T04:00:00"],
        id="midnight-in-a-dst-gap-runs-at-gap-end",
    ),
    pytest.param(
        scheduled(cron="0 30 2 * * ?", timezone=NY),
        "2026-03-07T00:00:00-05:00",
        "2026-03-09T23:00:00-04:00",
        ["2026-03-07T07:30:00", "2026-03-08T07:00:00", "2026-03-09T06:30:00"],
        id="scheduled-across-spring-forward",
    ),
]


@pytest.mark.parametrize(("spec", "start", "end", "expected"), BACKFILL_CASES)
def test_backfill_times(spec: Any, start: str, end: str, expected: list[str]) -> None:
    times = backfill_times(
        spec, datetime.fromisoformat(start), datetime.fromisoformat(end), limit=100
    )
    assert show(times) == expected


def test_backfill_times_stop_at_the_limit() -> None:
    spec = scheduled(cron="0 * * * *")
    times = backfill_times(spec, utc("2026-01-01T00:00"), utc("2026-12-31T00:00"), limit=5)
    assert show(times) == [f"2026-01-01T0{h}:00:00" for h in range(5)]
