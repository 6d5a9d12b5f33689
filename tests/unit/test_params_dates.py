"""DataWorks date expressions `$[...]` relative to cyctime."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.params.dates import (
    DateExpressionError,
    add_months,
    evaluate_date_expression,
    expand_date_expressions,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")

# 2026-03-10 14:05:09 in Shanghai: an ordinary day.
PLAIN = datetime(2026, 3, 10, 14, 5, 9, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("yyyymmdd", "20260310"),
        ("yyyymmdd-1", "20260309"),
        ("yyyymmdd+1", "20260311"),
        ("yyyymmdd - 1", "20260309"),
        ("yyyy-mm-dd", "2026-03-10"),
        ("yyyy-mm-dd-7", "2026-03-03"),
        ("yyyymmdd-10", "20260228"),
        ("yyyymm", "202603"),
        ("yyyy", "2026"),
        ("yy", "26"),
        ("mm", "03"),
        ("dd", "10"),
        ("hh24", "14"),
        ("hh24miss", "140509"),
        ("hh24:mi:ss", "14:05:09"),
        ("yyyy-mm-dd hh24:mi:ss", "2026-03-10 14:05:09"),
        ("yyyy/mm/dd", "2026/03/10"),
        ("yyyy.mm.dd_hh24", "2026.03.10_14"),
        ("hh24-1/24", "13"),
        ("hh24miss-1/24", "130509"),
        ("hh24miss-15/24", "230509"),
        ("yyyymmddhh24-15/24", "2026030923"),
        ("mi-1/24/60", "04"),
        ("mi-6/24/60", "59"),
        ("hh24mi-30/24/60", "1335"),
        ("ss-10/24/60/60", "59"),
        ("hh24miss+1/24", "150509"),
        ("add_months(yyyymmdd,-1)", "20260210"),
        ("add_months(yyyymmdd, 1)", "20260410"),
        ("add_months(yyyymmdd,-12)", "20250310"),
        ("add_months(yyyymm,-3)", "202512"),
        ("ADD_MONTHS(YYYYMMDD,+2)", "20260510"),
        ("YYYYMMDD-1", "20260309"),
    ],
)
def test_expressions_on_an_ordinary_day(expression: str, expected: str) -> None:
    assert evaluate_date_expression(expression, PLAIN) == expected


@pytest.mark.parametrize(
    ("cyctime", "expression", "expected"),
    [
        # Month ends and leap years.
        (datetime(2026, 3, 1, tzinfo=UTC), "yyyymmdd-1", "20260228"),
        (datetime(2024, 3, 1, tzinfo=UTC), "yyyymmdd-1", "20240229"),
        (datetime(2026, 1, 1, tzinfo=UTC), "yyyy-mm-dd-1", "2025-12-31"),
        (datetime(2026, 1, 1, 0, 30, tzinfo=UTC), "yyyymmddhh24mi-1/24", "202512312330"),
        (datetime(2026, 3, 31, tzinfo=UTC), "add_months(yyyymmdd,-1)", "20260228"),
        (datetime(2024, 3, 31, tzinfo=UTC), "add_months(yyyymmdd,-1)", "20240229"),
        (datetime(2024, 2, 29, tzinfo=UTC), "add_months(yyyymmdd,12)", "20250228"),
        (datetime(2026, 5, 31, tzinfo=UTC), "add_months(yyyymmdd,-1)", "20260430"),
        (datetime(2026, 1, 31, tzinfo=UTC), "add_months(yyyymmdd,1)", "20260228"),
        (datetime(2026, 12, 15, tzinfo=UTC), "add_months(yyyymm,1)", "202701"),
        (datetime(2026, 1, 15, tzinfo=UTC), "add_months(yyyy-mm-dd,-13)", "2024-12-15"),
        # New York springs forward at 02:00 on 2026-03-08: that day has 23 hours.
        (datetime(2026, 3, 9, 0, 30, tzinfo=NEW_YORK), "yyyymmdd-1", "20260308"),
        (datetime(2026, 3, 9, 0, 30, tzinfo=NEW_YORK), "yyyymmddhh24mi-1", "202603080030"),
        (datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK), "hh24mi-1/24", "0130"),
        (datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK), "hh24mi-30/24/60", "0300"),
        (datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK), "hh24mi-31/24/60", "0159"),
        (datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK), "hh24mi+1/24", "0330"),
        (datetime(2026, 3, 8, 0, 30, tzinfo=NEW_YORK), "yyyymmdd+1", "20260309"),
        # New York falls back at 02:00 on 2026-11-01: that day has 25 hours.
        (datetime(2026, 11, 2, 0, 30, tzinfo=NEW_YORK), "yyyymmdd-1", "20261101"),
        (datetime(2026, 11, 1, 23, 30, tzinfo=NEW_YORK), "yyyymmdd-1", "20261031"),
        (datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK), "hh24mi-1/24", "0130"),
        (datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NEW_YORK), "hh24mi-1/24", "0030"),
        (datetime(2026, 11, 1, 2, 30, tzinfo=NEW_YORK), "hh24mi-2/24", "0130"),
        # Berlin: 2026-03-29 (23 hours) and 2026-10-25 (25 hours).
        (datetime(2026, 3, 30, 0, 15, tzinfo=BERLIN), "yyyymmdd-1", "20260329"),
        (datetime(2026, 3, 29, 3, 15, tzinfo=BERLIN), "hh24mi-1/24", "0115"),
        (datetime(2026, 10, 26, 0, 15, tzinfo=BERLIN), "yyyy-mm-dd-1", "2026-10-25"),
        (datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN), "hh24-2/24", "02"),
        (datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN), "hh24-3/24", "02"),
    ],
)
def test_calendar_days_and_elapsed_hours(cyctime: datetime, expression: str, expected: str) -> None:
    assert evaluate_date_expression(expression, cyctime) == expected


def test_day_offsets_are_not_24_hour_steps() -> None:
    # 24 elapsed hours before 00:30 on the day after spring-forward is 23:30 two days earlier.
    cyctime = datetime(2026, 3, 9, 0, 30, tzinfo=NEW_YORK)
    assert evaluate_date_expression("yyyymmddhh24-24/24", cyctime) == "2026030723"
    assert evaluate_date_expression("yyyymmdd-1", cyctime) == "20260308"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ds=$[yyyymmdd-1]", "ds=20260309"),
        ("$[yyyy]-$[mm]/$[dd] $[hh24]", "2026-03/10 14"),
        ("no expressions ${bizdate} $HOME", "no expressions ${bizdate} $HOME"),
        ("", ""),
    ],
)
def test_expand_replaces_every_expression(text: str, expected: str) -> None:
    assert expand_date_expressions(text, PLAIN) == expected


@pytest.mark.parametrize(
    "expression",
    ["foo", "yyyymmdd-1-1", "hh", "yyyymmdd*2", "", "1+2", "yyyymmdd-1/12", "add_months(x,1)"],
)
def test_unknown_expressions_are_clear_errors(expression: str) -> None:
    with pytest.raises(DateExpressionError) as caught:
        evaluate_date_expression(expression, PLAIN)
    assert f"'$[{expression}]'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_expansion_error_names_the_expression() -> None:
    with pytest.raises(DateExpressionError, match=r"'\$\[yyyymmdd\*2\]'"):
        expand_date_expressions("x=$[yyyymmdd*2]", PLAIN)


def test_out_of_range_is_a_date_expression_error() -> None:
    with pytest.raises(DateExpressionError, match="out of range"):
        evaluate_date_expression("yyyymmdd-99999999", PLAIN)


def test_naive_cyctime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_date_expression("yyyymmdd", datetime(2026, 3, 10))


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2026, 3, 31, 12, tzinfo=UTC), -1, datetime(2026, 2, 28, 12, tzinfo=UTC)),
        (datetime(2026, 1, 31, tzinfo=UTC), 13, datetime(2027, 2, 28, tzinfo=UTC)),
        (datetime(2026, 1, 15, tzinfo=UTC), -1, datetime(2025, 12, 15, tzinfo=UTC)),
        (datetime(2026, 1, 15, tzinfo=UTC), 0, datetime(2026, 1, 15, tzinfo=UTC)),
    ],
)
def test_add_months(moment: datetime, months: int, expected: datetime) -> None:
    assert add_months(moment, months) == expected
