"""Cron fire times: syntax, time zones and DST, bounds, validation."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.cron import (
    CronError,
    fires_between,
    latest_fire_at_or_before,
    next_fire,
    validate_cron,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SHANGHAI = "Asia/Shanghai"


def utc(text: str) -> datetime:
    """'2026-03-08 07:00' (UTC) or an ISO string with its own offset, as an aware datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def show(values: list[datetime]) -> list[str]:
    return [v.strftime("%Y-%m-%d %H:%M" + (":%S" if v.second else "")) for v in values]


# (expression, time zone, since, until, expected fire times in UTC)
SYNTAX_CASES = [
    pytest.param(
        "0 0 */4 ? * *",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-02 00:00",
        [
            "2026-05-01 04:00",
            "2026-05-01 08:00",
            "2026-05-01 12:00",
            "2026-05-01 16:00",
            "2026-05-01 20:00",
            "2026-05-02 00:00",
        ],
        id="flink-every-4-hours-since-exclusive-until-inclusive",
    ),
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-05-01 00:00",
        "2026-05-04 00:00",
        ["2026-05-01 18:00", "2026-05-02 18:00", "2026-05-03 18:00"],
        id="flink-daily-2am-shanghai",
    ),
    pytest.param(
        "0 0 5,17 ? * MON-FRI",
        SHANGHAI,
        "2026-04-30 16:00",  # Fri 2026-05-01 00:00 local
        "2026-05-04 16:00",  # Tue 2026-05-05 00:00 local
        ["2026-04-30 21:00", "2026-05-01 09:00", "2026-05-03 21:00", "2026-05-04 09:00"],
        id="flink-weekdays-5-and-17",
    ),
    pytest.param(
        "0 2 * * *",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-03 23:00",
        ["2026-05-01 02:00", "2026-05-02 02:00", "2026-05-03 02:00"],
        id="unix-daily",
    ),
    pytest.param(
        "*/15 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 11:00",
        ["2026-05-01 10:15", "2026-05-01 10:30", "2026-05-01 10:45", "2026-05-01 11:00"],
        id="unix-every-15-minutes",
    ),
    pytest.param(
        "10/20 * * * * ?",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 10:01",
        ["2026-05-01 10:00:10", "2026-05-01 10:00:30", "2026-05-01 10:00:50"],
        id="quartz-seconds-first-with-start-step",
    ),
    pytest.param(
        "0 0 12 L * ?",
        "UTC",
        "2026-01-01 00:00",
        "2026-05-01 00:00",
        ["2026-01-31 12:00", "2026-02-28 12:00", "2026-03-31 12:00", "2026-04-30 12:00"],
        id="L-last-day-of-month",
    ),
    pytest.param(
        "0 0 0 L 2 ?",
        "UTC",
        "2027-01-01 00:00",
        "2029-01-01 00:00",
        ["2027-02-28 00:00", "2028-02-29 00:00"],
        id="L-in-leap-february",
    ),
    pytest.param(
        "0 0 12 L-2 * ?",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-29 12:00", "2026-02-26 12:00", "2026-03-29 12:00"],
        id="L-minus-2",
    ),
    pytest.param(
        "0 0 12 LW * ?",
        "UTC",
        "2026-04-01 00:00",
        "2026-09-01 00:00",
        [
            "2026-04-30 12:00",
            "2026-05-29 12:00",
            "2026-06-30 12:00",
            "2026-07-31 12:00",
            "2026-08-31 12:00",
        ],
        id="LW-last-weekday",
    ),
    pytest.param(
        "0 0 12 15W * ?",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-15 12:00", "2026-02-16 12:00", "2026-03-16 12:00"],
        id="W-sunday-moves-to-monday",
    ),
    pytest.param(
        "0 0 12 15W 8 ?",
        "UTC",
        "2026-01-01 00:00",
        "2027-01-01 00:00",
        ["2026-08-14 12:00"],
        id="W-saturday-moves-to-friday",
    ),
    pytest.param(
        "0 0 12 1W 8 ?",
        "UTC",
        "2026-01-01 00:00",
        "2027-01-01 00:00",
        ["2026-08-03 12:00"],
        id="W-never-leaves-the-month",
    ),
    pytest.param(
        "0 12 31W * *",
        "UTC",
        "2026-01-01 00:00",
        "2026-07-01 00:00",
        ["2026-01-30 12:00", "2026-03-31 12:00", "2026-05-29 12:00"],
        id="W-skips-months-without-the-day",
    ),
    pytest.param(
        "0 0 12 ? * 6#3",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-16 12:00", "2026-02-20 12:00", "2026-03-20 12:00"],
        id="hash-quartz-third-friday",
    ),
    pytest.param(
        "0 12 * * 5#3",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-16 12:00", "2026-02-20 12:00", "2026-03-20 12:00"],
        id="hash-unix-third-friday",
    ),
    pytest.param(
        "0 0 12 ? * MON#5",
        "UTC",
        "2026-01-01 00:00",
        "2027-01-01 00:00",
        ["2026-03-30 12:00", "2026-06-29 12:00", "2026-08-31 12:00", "2026-11-30 12:00"],
        id="hash-fifth-monday-only-when-it-exists",
    ),
    pytest.param(
        "0 0 12 ? * 6L",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-30 12:00", "2026-02-27 12:00", "2026-03-27 12:00"],
        id="nL-quartz-last-friday",
    ),
    pytest.param(
        "0 12 * * 5L",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-30 12:00", "2026-02-27 12:00", "2026-03-27 12:00"],
        id="nL-unix-last-friday",
    ),
    pytest.param(
        "0 0 12 ? * 5L",
        "UTC",
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        ["2026-01-29 12:00", "2026-02-26 12:00", "2026-03-26 12:00"],
        id="nL-quartz-5-is-thursday",
    ),
    pytest.param(
        "0 0 12 ? * L",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-17 00:00",
        ["2026-05-02 12:00", "2026-05-09 12:00", "2026-05-16 12:00"],
        id="quartz-L-alone-is-saturday",
    ),
    pytest.param(
        "0 0 12 1 1 ? 2028,2030",
        "UTC",
        "2026-01-01 00:00",
        "2040-01-01 00:00",
        ["2028-01-01 12:00", "2030-01-01 12:00"],
        id="years-list",
    ),
    pytest.param(
        "0 0 0 1 1 ? 2026/3",
        "UTC",
        "2025-12-31 00:00",
        "2036-01-01 00:00",
        ["2026-01-01 00:00", "2029-01-01 00:00", "2032-01-01 00:00", "2035-01-01 00:00"],
        id="years-step",
    ),
    pytest.param(
        "0 0 0 1 1 ? 2020-2024",
        "UTC",
        "2026-01-01 00:00",
        "2030-01-01 00:00",
        [],
        id="years-all-past",
    ),
    pytest.param(
        "0 12 14 * 5",
        "UTC",
        "2026-03-01 00:00",
        "2026-04-01 00:00",
        [
            "2026-03-06 12:00",
            "2026-03-13 12:00",
            "2026-03-14 12:00",
            "2026-03-20 12:00",
            "2026-03-27 12:00",
        ],
        id="unix-both-day-fields-or",
    ),
    pytest.param(
        "0 12 L * 1",
        "UTC",
        "2026-05-01 00:00",
        "2026-06-01 00:00",
        [
            "2026-05-04 12:00",
            "2026-05-11 12:00",
            "2026-05-18 12:00",
            "2026-05-25 12:00",
            "2026-05-31 12:00",
        ],
        id="unix-or-with-L",
    ),
    pytest.param(
        "0 22-1 * * *",
        "UTC",
        "2026-05-01 12:00",
        "2026-05-02 12:00",
        ["2026-05-01 22:00", "2026-05-01 23:00", "2026-05-02 00:00", "2026-05-02 01:00"],
        id="wrapping-hour-range",
    ),
    pytest.param(
        "0 0 12 ? * FRI-MON",
        "UTC",
        "2026-05-04 00:00",
        "2026-05-11 00:00",
        ["2026-05-04 12:00", "2026-05-08 12:00", "2026-05-09 12:00", "2026-05-10 12:00"],
        id="wrapping-weekday-range",
    ),
    pytest.param(
        "0 0 0 1 NOV-FEB ?",
        "UTC",
        "2026-01-02 00:00",
        "2027-01-02 00:00",
        ["2026-02-01 00:00", "2026-11-01 00:00", "2026-12-01 00:00", "2027-01-01 00:00"],
        id="wrapping-month-range",
    ),
    pytest.param(
        "0 12 * * 7",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-15 00:00",
        ["2026-05-03 12:00", "2026-05-10 12:00"],
        id="unix-7-is-sunday",
    ),
    pytest.param(
        "0 12 * * 5-7",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-05 00:00",
        ["2026-05-01 12:00", "2026-05-02 12:00", "2026-05-03 12:00"],
        id="unix-range-up-to-7",
    ),
    pytest.param(
        "0 12 1 jan,Feb *",
        "UTC",
        "2026-01-01 00:00",
        "2027-01-01 00:00",
        ["2026-01-01 12:00", "2026-02-01 12:00"],
        id="names-any-case",
    ),
    pytest.param(
        "0 0 0 29 2 ?",
        "UTC",
        "2026-01-01 00:00",
        "2033-01-01 00:00",
        ["2028-02-29 00:00", "2032-02-29 00:00"],
        id="leap-day",
    ),
    pytest.param(
        "0 0 12 * * MON",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-15 00:00",
        ["2026-05-04 12:00", "2026-05-11 12:00"],
        id="quartz-star-day-of-month-with-weekday",
    ),
    pytest.param(
        "@daily",
        SHANGHAI,
        "2026-05-01 00:00",
        "2026-05-02 23:00",
        ["2026-05-01 16:00", "2026-05-02 16:00"],
        id="shorthand-daily",
    ),
    pytest.param(
        "  0 30 9 ? * * *  ",
        "UTC",
        "2026-05-01 00:00",
        "2026-05-02 12:00",
        ["2026-05-01 09:30", "2026-05-02 09:30"],
        id="seven-fields-any-year-and-padding",
    ),
]


@pytest.mark.parametrize(("expression", "zone", "since", "until", "expected"), SYNTAX_CASES)
def test_fires_between_syntax(
    expression: str, zone: str, since: str, until: str, expected: list[str]
) -> None:
    assert show(fires_between(expression, zone, utc(since), utc(until))) == expected


DST_CASES = [
    # America/New_York 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z.
    pytest.param(
        "30 2 * * *",
        NY,
        "2026-03-06 12:00",
        "2026-03-10 00:00",
        ["2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"],
        id="ny-spring-skipped-time-fires-at-gap-end",
    ),
    pytest.param(
        "0 30 2,3 * * ?",
        NY,
        "2026-03-08 00:00",
        "2026-03-09 00:00",
        ["2026-03-08 07:00", "2026-03-08 07:30"],
        id="ny-spring-gap-then-next-hour",
    ),
    pytest.param(
        "30 30 2 * * ?",
        NY,
        "2026-03-08 00:00",
        "2026-03-09 00:00",
        ["2026-03-08 07:00"],
        id="ny-spring-seconds-in-gap",
    ),
    pytest.param(
        "0 * * * *",
        NY,
        "2026-03-08 05:00",
        "2026-03-08 09:00",
        ["2026-03-08 06:00", "2026-03-08 07:00", "2026-03-08 08:00", "2026-03-08 09:00"],
        id="ny-spring-hourly-every-real-hour",
    ),
    pytest.param(
        "*/20 * * * *",
        NY,
        "2026-03-08 06:30",
        "2026-03-08 07:30",
        ["2026-03-08 06:40", "2026-03-08 07:00", "2026-03-08 07:20"],
        id="ny-spring-gap-times-collapse-into-one",
    ),
    # America/New_York 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00Z.
    pytest.param(
        "30 1 * * *",
        NY,
        "2026-10-31 00:00",
        "2026-11-03 00:00",
        ["2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"],
        id="ny-fall-repeated-time-fires-once",
    ),
    pytest.param(
        "*/20 1 * * *",
        NY,
        "2026-11-01 04:00",
        "2026-11-01 08:00",
        ["2026-11-01 05:00", "2026-11-01 05:20", "2026-11-01 05:40"],
        id="ny-fall-fixed-hour-only-first-pass",
    ),
    pytest.param(
        "0 * * * *",
        NY,
        "2026-11-01 03:30",
        "2026-11-01 08:00",
        [
            "2026-11-01 04:00",
            "2026-11-01 05:00",
            "2026-11-01 06:00",
            "2026-11-01 07:00",
            "2026-11-01 08:00",
        ],
        id="ny-fall-hourly-every-real-hour",
    ),
    pytest.param(
        "*/30 * * * *",
        NY,
        "2026-11-01 04:45",
        "2026-11-01 07:15",
        [
            "2026-11-01 05:00",
            "2026-11-01 05:30",
            "2026-11-01 06:00",
            "2026-11-01 06:30",
            "2026-11-01 07:00",
        ],
        id="ny-fall-every-30-minutes-both-passes",
    ),
    # Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z.
    pytest.param(
        "0 0 2 ? * *",
        BERLIN,
        "2026-03-27 12:00",
        "2026-03-31 12:00",
        ["2026-03-28 01:00", "2026-03-29 01:00", "2026-03-30 00:00", "2026-03-31 00:00"],
        id="berlin-spring-daily-2am",
    ),
    pytest.param(
        "0 0 * ? * *",
        BERLIN,
        "2026-03-29 00:00",
        "2026-03-29 03:00",
        ["2026-03-29 01:00", "2026-03-29 02:00", "2026-03-29 03:00"],
        id="berlin-spring-hourly",
    ),
    # Europe/Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00Z.
    pytest.param(
        "30 2 * * *",
        BERLIN,
        "2026-10-24 00:00",
        "2026-10-27 00:00",
        ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"],
        id="berlin-fall-repeated-time-fires-once",
    ),
    pytest.param(
        "0 0 * ? * *",
        BERLIN,
        "2026-10-24 23:30",
        "2026-10-25 03:00",
        ["2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00", "2026-10-25 03:00"],
        id="berlin-fall-hourly-every-real-hour",
    ),
    # Asia/Shanghai has no DST: the same dates are ordinary days.
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-03-07 00:00",
        "2026-03-10 00:00",
        ["2026-03-07 18:00", "2026-03-08 18:00", "2026-03-09 18:00"],
        id="shanghai-march",
    ),
    pytest.param(
        "30 1 * * *",
        SHANGHAI,
        "2026-10-31 00:00",
        "2026-11-02 00:00",
        ["2026-10-31 17:30", "2026-11-01 17:30"],
        id="shanghai-november",
    ),
]


@pytest.mark.parametrize(("expression", "zone", "since", "until", "expected"), DST_CASES)
def test_fires_between_dst(
    expression: str, zone: str, since: str, until: str, expected: list[str]
) -> None:
    assert show(fires_between(expression, zone, utc(since), utc(until))) == expected


@pytest.mark.parametrize(
    ("zone", "year_start", "year_end"),
    [
        (NY, "2026-01-01 05:00", "2027-01-01 05:00"),
        (BERLIN, "2025-12-31 23:00", "2026-12-31 23:00"),
    ],
)
def test_hourly_schedule_fires_every_real_hour_for_a_whole_year(
    zone: str, year_start: str, year_end: str
) -> None:
    fires = fires_between("0 * * * *", zone, utc(year_start), utc(year_end))
    assert len(fires) == 365 * 24
    assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(hours=1)}


BOUND_CASES = [
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-11-25 00:00",
        "2026-12-03 00:00",
        "2026-12-01T00:00:00+08:00",
        None,
        ["2026-11-30 18:00", "2026-12-01 18:00", "2026-12-02 18:00"],
        id="start-at-from-design-example",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        "2026-05-01 12:00",
        None,
        ["2026-05-01 12:00", "2026-05-01 13:00", "2026-05-01 14:00"],
        id="start-at-on-a-fire-time-is-included",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        "2026-05-01 12:00:00.000001",
        None,
        ["2026-05-01 13:00", "2026-05-01 14:00"],
        id="start-at-just-after-a-fire-time",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        None,
        "2026-05-01 12:00",
        ["2026-05-01 11:00", "2026-05-01 12:00"],
        id="end-at-on-a-fire-time-is-included",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        "2026-05-01 11:30",
        "2026-05-01 13:30",
        ["2026-05-01 12:00", "2026-05-01 13:00"],
        id="both-bounds",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        None,
        "2026-05-01 09:00",
        [],
        id="end-at-before-window",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 10:00",
        "2026-05-01 14:00",
        "2026-05-02 00:00",
        None,
        [],
        id="start-at-after-window",
    ),
    pytest.param(
        "0 * * * *",
        "UTC",
        "2026-05-01 14:00",
        "2026-05-01 10:00",
        None,
        None,
        [],
        id="until-before-since",
    ),
]


@pytest.mark.parametrize(
    ("expression", "zone", "since", "until", "start_at", "end_at", "expected"), BOUND_CASES
)
def test_fires_between_respects_start_and_end(
    expression: str,
    zone: str,
    since: str,
    until: str,
    start_at: str | None,
    end_at: str | None,
    expected: list[str],
) -> None:
    fires = fires_between(
        expression,
        zone,
        utc(since),
        utc(until),
        start_at=utc(start_at) if start_at else None,
        end_at=utc(end_at) if end_at else None,
    )
    assert show(fires) == expected


@pytest.mark.parametrize(
    ("expression", "limit", "expected"),
    [
        ("* * * * *", 3, ["2026-01-01 00:01", "2026-01-01 00:02", "2026-01-01 00:03"]),
        ("* * * * * ?", 2, ["2026-01-01 00:00:01", "2026-01-01 00:00:02"]),
        ("* * * * *", 0, []),
        ("0 0 1 1 *", 10, ["2027-01-01 00:00"]),
    ],
)
def test_limit_keeps_the_earliest_and_a_year_of_minutes_does_not_hang(
    expression: str, limit: int, expected: list[str]
) -> None:
    fires = fires_between(
        expression, "UTC", utc("2026-01-01 00:00"), utc("2027-01-01 00:00"), limit=limit
    )
    assert show(fires) == expected


def test_outputs_are_utc_and_inputs_may_use_any_offset() -> None:
    fires = fires_between(
        "0 0 2 ? * *",
        SHANGHAI,
        utc("2026-05-01T00:00:00+08:00"),
        utc("2026-05-03T00:00:00-04:00"),
    )
    assert show(fires) == ["2026-04-30 18:00", "2026-05-01 18:00", "2026-05-02 18:00"]
    assert all(fire.tzinfo is UTC for fire in fires)


NEXT_CASES = [
    pytest.param("0 0 2 ? * *", SHANGHAI, "2026-05-01 12:00", {}, "2026-05-01 18:00", id="plain"),
    pytest.param(
        "0 0 2 ? * *", SHANGHAI, "2026-05-01 18:00", {}, "2026-05-02 18:00", id="strictly-after"
    ),
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-05-01 12:00",
        {"start_at": "2026-06-01T00:00:00+08:00"},
        "2026-05-31 18:00",
        id="not-before-start-at",
    ),
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-05-01 12:00",
        {"end_at": "2026-05-01 17:59"},
        None,
        id="none-after-end-at",
    ),
    pytest.param("0 0 0 1 1 ? 2020", "UTC", "2026-01-01 00:00", {}, None, id="years-exhausted"),
    pytest.param(
        "0 0 0 1 1 ? 2090", "UTC", "2026-01-01 00:00", {}, "2090-01-01 00:00", id="far-year"
    ),
    pytest.param("30 2 * * *", NY, "2026-03-08 00:00", {}, "2026-03-08 07:00", id="ny-gap"),
    pytest.param(
        "30 1 * * *", NY, "2026-11-01 05:30", {}, "2026-11-02 06:30", id="ny-repeat-not-twice"
    ),
    pytest.param(
        "*/30 * * * *", NY, "2026-11-01 05:30", {}, "2026-11-01 06:00", id="ny-interval-repeat"
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after", "bounds", "expected"), NEXT_CASES)
def test_next_fire(
    expression: str, zone: str, after: str, bounds: dict[str, str], expected: str | None
) -> None:
    fire = next_fire(expression, zone, utc(after), **{k: utc(v) for k, v in bounds.items()})
    assert (show([fire])[0] if fire else None) == expected


LATEST_CASES = [
    pytest.param("0 0 2 ? * *", SHANGHAI, "2026-05-01 12:00", {}, "2026-04-30 18:00", id="plain"),
    pytest.param(
        "0 0 2 ? * *", SHANGHAI, "2026-05-05 12:00", {}, "2026-05-04 18:00", id="misfire-run-once"
    ),
    pytest.param(
        "0 0 2 ? * *", SHANGHAI, "2026-04-30 18:00", {}, "2026-04-30 18:00", id="at-is-inclusive"
    ),
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-05-05 12:00",
        {"start_at": "2026-05-04 18:00:01"},
        None,
        id="none-before-start-at",
    ),
    pytest.param(
        "0 0 2 ? * *",
        SHANGHAI,
        "2026-05-05 12:00",
        {"end_at": "2026-05-02 00:00"},
        "2026-05-01 18:00",
        id="not-after-end-at",
    ),
    pytest.param(
        "0 0 12 1 1 ? 2028,2030",
        "UTC",
        "2029-06-01 00:00",
        {},
        "2028-01-01 12:00",
        id="years",
    ),
    pytest.param("0 0 12 1 1 ? 2090", "UTC", "2029-06-01 00:00", {}, None, id="years-to-come"),
    pytest.param("0 0 0 29 2 ?", "UTC", "2027-01-01 00:00", {}, "2024-02-29 00:00", id="leap"),
    pytest.param("30 1 * * *", NY, "2026-11-01 07:00", {}, "2026-11-01 05:30", id="ny-repeat"),
    pytest.param(
        "0 * * * *", NY, "2026-11-01 06:30", {}, "2026-11-01 06:00", id="ny-interval-repeat"
    ),
    pytest.param("30 2 * * *", NY, "2026-03-08 07:00", {}, "2026-03-08 07:00", id="ny-gap"),
    pytest.param("0 * * * *", NY, "2026-03-08 06:59", {}, "2026-03-08 06:00", id="ny-before-gap"),
]


@pytest.mark.parametrize(("expression", "zone", "at", "bounds", "expected"), LATEST_CASES)
def test_latest_fire_at_or_before(
    expression: str, zone: str, at: str, bounds: dict[str, str], expected: str | None
) -> None:
    fire = latest_fire_at_or_before(
        expression, zone, utc(at), **{k: utc(v) for k, v in bounds.items()}
    )
    assert (show([fire])[0] if fire else None) == expected


TRANSITIONS = [
    (NY, "2026-03-08 07:00"),
    (NY, "2026-11-01 06:00"),
    (BERLIN, "2026-03-29 01:00"),
    (BERLIN, "2026-10-25 01:00"),
]


@pytest.mark.parametrize(
    "expression",
    ["30 1 * * *", "30 2 * * *", "0 * * * *", "*/20 * * * *", "*/20 1,2 * * *", "15 0 2 * * ?"],
)
@pytest.mark.parametrize(("zone", "transition"), TRANSITIONS)
def test_every_query_agrees_around_transitions(expression: str, zone: str, transition: str) -> None:
    """Windows split anywhere, next and latest all see the same fire times as one big window."""
    center = utc(transition)
    reference = fires_between(
        expression, zone, center - timedelta(days=2), center + timedelta(days=2)
    )
    assert reference == sorted(set(reference))
    for minutes in range(-150, 151, 10):
        point = center + timedelta(minutes=minutes, seconds=minutes % 3)
        before = [fire for fire in reference if fire <= point]
        after = [fire for fire in reference if fire > point]
        start = center - timedelta(days=2)
        end = center + timedelta(days=2)
        assert fires_between(expression, zone, start, point) == before
        assert fires_between(expression, zone, point, end) == after
        assert latest_fire_at_or_before(expression, zone, point) == before[-1]
        assert next_fire(expression, zone, point) == after[0]


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 */4 ? * *",
        "0 0 2 ? * *",
        "0 0 5,17 ? * MON-FRI",
        "0 2 * * *",
        "*/15 * * * *",
        "0 0 12 L * ?",
        "0 0 12 LW * ?",
        "0 0 12 L-3 * ?",
        "0 0 12 15W * ?",
        "0 0 12 ? * 6#3",
        "0 0 12 ? * 6L",
        "0 12 * * 5L",
        "0 0 12 ? * * 2026-2030",
        "0 0 12 * * ?",
        "0 0 12 ? * *",
        "0 12 * * 0,7",
        "@hourly",
        "0 0 12 ? JAN,jul sun",
    ],
)
def test_validate_accepts(expression: str) -> None:
    validate_cron(expression, SHANGHAI)


INVALID_CASES = [
    pytest.param("* * * *", None, ["expected 5 fields", "got 4"], id="too-few-fields"),
    pytest.param("* * * * * * * *", None, ["got 8"], id="too-many-fields"),
    pytest.param("", None, ["got 0"], id="empty"),
    pytest.param(
        "0 0 12 ? * ?", "day-of-week", ["only one of day-of-month and day-of-week"], id="two-?"
    ),
    pytest.param(
        "0 0 12 5 * MON", "day-of-week", ["restricting both day fields"], id="both-days-quartz"
    ),
    pytest.param("60 * * * *", "minute", ["minute field '60'", "outside 0-59"], id="minute-60"),
    pytest.param("0 24 * * *", "hour", ["outside 0-23"], id="hour-24"),
    pytest.param("0 0 32 * *", "day-of-month", ["outside 1-31"], id="dom-32"),
    pytest.param("0 0 0 ? 13 *", "month", ["outside 1-12"], id="month-13"),
    pytest.param("0 0 * * 8", "day-of-week", ["outside 0-7"], id="unix-dow-8"),
    pytest.param("0 0 12 ? * 0", "day-of-week", ["outside 1-7"], id="quartz-dow-0"),
    pytest.param("60 0 12 * * ?", "second", ["outside 0-59"], id="second-60"),
    pytest.param("0 0 12 ? * * 1969", "year", ["outside 1970-2099"], id="year-1969"),
    pytest.param("0 0 12 ? * * 2030-2020", "year", ["runs backwards"], id="year-backwards"),
    pytest.param("0 ? * * *", "hour", ["'?' is only allowed in day"], id="?-in-hour"),
    pytest.param("*/0 * * * *", "minute", ["not a positive number"], id="step-0"),
    pytest.param("*/60 * * * *", "minute", ["too large"], id="step-too-large"),
    pytest.param("0 0 12 ? * 6#6", "day-of-week", ["between 1 and 5"], id="hash-6"),
    pytest.param("0 0 12 L,5 * ?", "day-of-month", ["stand alone"], id="L-in-list"),
    pytest.param("0 0 12 40W * ?", "day-of-month", ["'nW'"], id="W-40"),
    pytest.param("0 0 12 L-31 * ?", "day-of-month", ["'L-n'"], id="L-31"),
    pytest.param("0 12 * * L", "day-of-week", ["Quartz syntax"], id="unix-L-alone"),
    pytest.param("0 0 12 ? * MON-XYZ", "day-of-week", ["'XYZ' is not a number"], id="bad-name"),
    pytest.param("H * * * *", "minute", ["'H' is not a number"], id="hash-H"),
    pytest.param("0 0 1,,2 * *", "day-of-month", ["empty item"], id="empty-item"),
    pytest.param("0 -5 * * *", "hour", ["empty value"], id="negative"),
    pytest.param("0 0 0 30 2 ?", None, ["never fires"], id="february-30"),
    pytest.param("0 0 0 31 4,6,9,11 ?", None, ["never fires"], id="31-in-short-months"),
    pytest.param("0 0 0 29 2 ? 2027", None, ["never fires"], id="no-leap-year"),
    pytest.param("@fortnightly", None, ["unknown shorthand"], id="bad-shorthand"),
]


@pytest.mark.parametrize(("expression", "field", "fragments"), INVALID_CASES)
def test_validate_rejects_with_reason(
    expression: str, field: str | None, fragments: list[str]
) -> None:
    with pytest.raises(CronError) as caught:
        validate_cron(expression, "UTC")
    assert caught.value.field == field
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("zone", ["Mars/Base", "", "utc", "localtime", "right/UTC", "../etc"])
def test_validate_rejects_unknown_time_zone(zone: str) -> None:
    with pytest.raises(CronError, match="time zone") as caught:
        validate_cron("0 2 * * *", zone)
    assert caught.value.field == "time zone"


def test_fire_functions_validate_too() -> None:
    with pytest.raises(CronError, match="minute field"):
        fires_between("61 * * * *", "UTC", utc("2026-01-01 00:00"), utc("2026-01-02 00:00"))
    with pytest.raises(CronError, match="time zone"):
        next_fire("0 * * * *", "Nowhere/City", utc("2026-01-01 00:00"))


@pytest.mark.parametrize(
    "call",
    [
        lambda: fires_between("0 * * * *", "UTC", datetime(2026, 1, 1), utc("2026-01-02 00:00")),
        lambda: next_fire("0 * * * *", "UTC", utc("2026-01-01 00:00"), end_at=datetime(2026, 2, 1)),
        lambda: latest_fire_at_or_before("0 * * * *", "UTC", datetime(2026, 1, 1)),
        lambda: fires_between(
            "0 * * * *", "UTC", utc("2026-01-01 00:00"), utc("2026-01-02 00:00"), limit=-1
        ),
    ],
    ids=["naive-since", "naive-end-at", "naive-at", "negative-limit"],
)
def test_bad_arguments_raise_value_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"timezone-aware|limit") as caught:
        call()
    assert not isinstance(caught.value, CronError)


def _last_day(moment: datetime) -> int:
    following = (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - timedelta(days=1)).day


# Each expression next to a plain-Python reading of it; weekday() counts from Monday = 0.
ORACLE_CASES = [
    pytest.param("*/7 3-5,22 * * *", lambda d: d.minute % 7 == 0 and d.hour in {3, 4, 5, 22}),
    pytest.param(
        "0 12 14 * 5", lambda d: (d.minute, d.hour) == (0, 12) and (d.day == 14 or d.weekday() == 4)
    ),
    pytest.param(
        "5 4 */3 * 1-3",
        lambda d: (d.minute, d.hour) == (5, 4) and ((d.day - 1) % 3 == 0 or d.weekday() < 3),
    ),
    pytest.param(
        "0 0 9-17/2 ? * MON-FRI",
        lambda d: d.minute == 0 and d.hour in {9, 11, 13, 15, 17} and d.weekday() < 5,
    ),
    pytest.param(
        "0 30 8 L-1 * ?", lambda d: (d.minute, d.hour) == (30, 8) and d.day == _last_day(d) - 1
    ),
    pytest.param(
        "0 0 0 ? * 2#2",
        lambda d: (d.minute, d.hour) == (0, 0) and d.weekday() == 0 and 8 <= d.day <= 14,
    ),
    pytest.param(
        "0 0 6 LW * ?",
        lambda d: (
            (d.minute, d.hour) == (0, 6)
            and d.weekday() < 5
            and all(
                (d + timedelta(days=n)).weekday() >= 5 for n in range(1, _last_day(d) - d.day + 1)
            )
        ),
    ),
    pytest.param(
        "0 0 12 ? * 6L",
        lambda d: (d.minute, d.hour) == (0, 12) and d.weekday() == 4 and d.day + 7 > _last_day(d),
    ),
]


@pytest.mark.parametrize(("expression", "matches"), ORACLE_CASES)
def test_agrees_with_minute_by_minute_reading(
    expression: str, matches: Callable[[datetime], bool]
) -> None:
    start = utc("2026-01-01 00:00")
    minutes = [start + timedelta(minutes=n) for n in range(1, 90 * 24 * 60 + 1)]
    expected = [moment for moment in minutes if matches(moment)]
    assert expected, "the window must contain fire times"
    assert fires_between(expression, "UTC", start, minutes[-1]) == expected
