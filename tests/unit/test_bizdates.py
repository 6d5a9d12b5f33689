"""Business dates as DataWorks users and ISO users write them, and what is refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.models.backfills import BackfillRequest
from shared.models.bizdates import parse_bizdate
from shared.models.instances import RunRequest


@pytest.mark.parametrize(
    "value",
    ["20260309", "2026-03-09", 20260309, " 20260309 ", date(2026, 3, 9)],
)
def test_both_spellings_are_the_same_day(value: Any) -> None:
    assert parse_bizdate(value) == date(2026, 3, 9)
    assert RunRequest.model_validate({"bizdate": value}).bizdate == date(2026, 3, 9)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-3-9", "yyyymmdd (20260309) or yyyy-mm-dd (2026-03-09)"),
        ("2026030", "yyyymmdd"),
        ("20261309", "not a calendar day"),
        ("20260230", "not a calendar day"),
        ("2026-03-09T00:00:00", "yyyymmdd"),
        ("09.03.2026", "yyyymmdd"),
        (1.5, "yyyymmdd"),
        (True, "yyyymmdd"),
        ("", "yyyymmdd"),
        (datetime(2026, 3, 9, tzinfo=UTC), "a day, not a time"),
    ],
)
def test_anything_else_is_refused_naming_the_field_and_the_forms(value: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunRequest.model_validate({"bizdate": value})
    (error,) = info.value.errors()
    assert error["loc"] == ("bizdate",)
    assert reason in error["msg"]


def test_backfill_bounds_as_bizdates_cover_the_fire_times_of_those_days() -> None:
    req = BackfillRequest.model_validate({"start": "20260301", "end": "2026-03-07"})
    start, end = req.bounds("Asia/Shanghai")
    # Bizdate D is the day before the fire time's local date: 1 March runs on 2 March.
    assert start == datetime.fromisoformat("2026-03-02T00:00:00+08:00")
    assert end == datetime.fromisoformat("2026-03-08T23:59:59.999999+08:00")


def test_backfill_bounds_given_as_times_are_kept() -> None:
    req = BackfillRequest.model_validate(
        {"start": "2026-03-01T00:00:00Z", "end": "2026-03-07T12:00:00+02:00"}
    )
    assert req.bounds("Asia/Shanghai") == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 7, 10, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start": "20260307", "end": "20260301"}, "end"),
        ({"start": "2026-03-01T00:00:00", "end": "20260301"}, "start"),
        ({"start": "2026-13-01", "end": "20260301"}, "start"),
    ],
)
def test_bad_backfill_bounds_name_their_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        BackfillRequest.model_validate(body)
