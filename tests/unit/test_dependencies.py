"""Pure parts of dependencies between workflows: spec validation, the previous cycle, ordering."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.db.dependencies import previous_cycle, waiting_reason
from shared.models.workflows import WorkflowSpec
from shared.operations.backfills import upstream_first


def spec(
    depends_on: list[dict[str, Any]], cron: str = "0 0 2 * * ?", tz: str = "UTC"
) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": "dwd",
            "type": "scheduled",
            "schedule": {"cron": cron, "timezone": tz},
            "nodes": [{"name": "a", "type": "shell", "code": "true"}],
            "depends_on": depends_on,
        }
    )


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        ([{"workflow": "self"}], "dependency cycle dwd -> dwd"),
        ([{"workflow": "dwd", "cycle": "same"}], "dependency cycle dwd -> dwd"),
        ([{"workflow": "ods"}, {"workflow": "ods", "cycle": "same"}], "listed twice"),
        ([{"workflow": "ods", "cycle": "next"}], "depends_on.0.cycle"),
        ([{"workflow": "bad name!"}], "depends_on.0.workflow"),
        ([{"workflow": "ods", "extra": 1}], "depends_on.0.extra"),
    ],
)
def test_invalid_dependencies_are_rejected_naming_the_field(
    depends_on: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(depends_on)


def test_self_and_cycles_resolve() -> None:
    s = spec([{"workflow": "ods"}, {"workflow": "self", "cycle": "previous"}])
    assert s.upstream_workflows() == [("ods", "same"), ("dwd", "previous")]
    assert spec([]).depends_on == []


@pytest.mark.parametrize(
    ("cron", "tz", "cyctime", "bizdate", "expected"),
    [
        # daily at 02:00 UTC: the previous cycle is yesterday's fire, one bizdate earlier
        (
            "0 0 2 * * ?",
            "UTC",
            datetime(2026, 12, 4, 2, tzinfo=UTC),
            date(2026, 12, 3),
            (date(2026, 12, 2), datetime(2026, 12, 3, 2, tzinfo=UTC)),
        ),
        # daily at 02:00 Shanghai = 18:00 UTC the day before
        (
            "0 0 2 * * ?",
            "Asia/Shanghai",
            datetime(2026, 12, 3, 18, tzinfo=UTC),
            date(2026, 12, 3),
            (date(2026, 12, 2), datetime(2026, 12, 2, 18, tzinfo=UTC)),
        ),
        # hourly: the previous cycle is the previous hour, of the same bizdate
        (
            "0 0 * * * ?",
            "UTC",
            datetime(2026, 12, 4, 5, tzinfo=UTC),
            date(2026, 12, 3),
            (date(2026, 12, 3), datetime(2026, 12, 4, 4, tzinfo=UTC)),
        ),
    ],
)
def test_own_previous_cycle_is_the_schedules_fire_before(
    cron: str,
    tz: str,
    cyctime: datetime,
    bizdate: date,
    expected: tuple[date, datetime],
) -> None:
    s = spec([{"workflow": "self", "cycle": "previous"}], cron, tz)
    assert previous_cycle(s, cyctime, bizdate, same_workflow=True) == expected


def test_another_workflows_previous_cycle_is_the_day_before() -> None:
    at = datetime(2026, 12, 4, 2, tzinfo=UTC)
    assert previous_cycle(None, at, date(2026, 12, 3), same_workflow=False) == (
        date(2026, 12, 2),
        None,
    )


def test_reason_names_workflow_and_bizdate() -> None:
    assert waiting_reason("ods_orders", date(2026, 12, 3)) == (
        "upstream workflow ods_orders for 20261203 not succeeded"
    )


def test_upstream_first_orders_the_group() -> None:
    assert upstream_first({"report": ["dwd"], "dwd": ["ods"], "ods": []}) == [
        "ods",
        "dwd",
        "report",
    ]
    # self-dependencies and workflows outside the group do not hold anything back
    assert upstream_first({"x": ["x", "elsewhere"], "y": []}) == ["x", "y"]
