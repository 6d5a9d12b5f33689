"""Lane values resolved from `policy.lane` templates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.lanes import MAX_LANE_CHARS, UNRESOLVED_LANE, lane_value


def lane(template: str, message: Any, **params: Any) -> str:
    return lane_value(
        template,
        workflow_type="triggered",
        workflow_name="orders",
        version=3,
        instance_id=42,
        cyctime=datetime(2026, 12, 5, 8, 0, tzinfo=UTC),
        timezone="UTC",
        workflow_params={"region": "eu"},
        runtime_params=params,
        trigger_message=message,
    )


@pytest.mark.parametrize(
    ("template", "message", "expected"),
    [
        ("${workflow.triggerMessage.key}", {"key": "c-17"}, "c-17"),
        ("${workflow.triggerMessage.key}", {"key": 17}, "17"),
        ("${workflow.triggerMessage.value.customer}", {"value": {"customer": "x"}}, "x"),
        ("${region}/${workflow.triggerMessage.key}", {"key": "k"}, "eu/k"),
        ("fixed", None, "fixed"),
        ("${workflow.triggerMessage.key}", {"seq": 1}, UNRESOLVED_LANE),
        ("${workflow.triggerMessage.key:-none}", {"seq": 1}, "none"),
        ("${workflow.triggerMessage.key}", None, UNRESOLVED_LANE),
    ],
)
def test_lane_values(template: str, message: Any, expected: str) -> None:
    assert lane(template, message) == expected


def test_a_runtime_parameter_can_set_the_lane() -> None:
    assert lane("${customer}", None, customer="c9") == "c9"


def test_lane_values_are_bounded() -> None:
    assert len(lane("${workflow.triggerMessage.key}", {"key": "x" * 5000})) == MAX_LANE_CHARS


def test_event_data_is_not_evaluated() -> None:
    # A key that looks like a template or a date expression is taken as it is.
    assert lane("${workflow.triggerMessage.key}", {"key": "${region}$[yyyymmdd]"}) == (
        "${region}$[yyyymmdd]"
    )
