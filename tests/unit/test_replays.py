"""Replay requests and counts: pure rules, no I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.db.replays import tally
from shared.models.events import AdmitResult, OutcomeOut
from shared.models.replays import ReplayRequest, parse_bound


def result(*outcomes: str) -> list[AdmitResult]:
    return [
        AdmitResult(
            event_id=1,
            workspace_id=1,
            outcomes=[
                OutcomeOut(trigger="t", workflow=None, outcome=o, instance_ids=[], detail=None)
                for o in outcomes
            ],
        )
    ]


def test_each_event_counts_once_under_its_outcome_for_the_trigger() -> None:
    counts = tally(
        [
            result("admitted"),
            result("duplicate"),
            result("filtered"),
            result("disabled"),
            result("invalid"),
            # Per workflow: one frozen, one admitted: the record did start a run.
            result("frozen", "admitted"),
            result("coalesced"),
        ]
    )
    assert dict(counts) == {"read": 7, "admitted": 3, "duplicate": 1, "filtered": 1, "other": 2}


@pytest.mark.parametrize(
    ("body", "span"),
    [
        ({"from": {"0": 3, "2": 0}, "to": {"0": 10, "2": 1}}, 8),
        ({"from": "2026-11-01T00:00:00+08:00", "to": "2026-11-01T00:00:00Z"}, 0),
    ],
)
def test_offset_span(body: dict[str, object], span: int) -> None:
    assert ReplayRequest.model_validate(body).offset_count() == span


def test_times_in_different_zones_compare_as_instants() -> None:
    with pytest.raises(ValidationError, match="to: must be after from"):
        ReplayRequest.model_validate(
            {"from": "2026-11-01T09:00:00+08:00", "to": "2026-11-01T01:00:00Z"}
        )


def test_the_range_survives_the_job_row() -> None:
    for body in (
        {"from": "2026-11-01T12:30:00Z", "to": "2026-11-02T00:00:00+08:00"},
        {"from": {"0": 5, "3": 7}, "to": {"0": 6, "3": 9}},
    ):
        request = ReplayRequest.model_validate(body)
        for bound in (request.from_, request.to):
            assert parse_bound(request.bound_json(bound)) == bound
