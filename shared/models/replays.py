"""Event replay: the request (`POST .../triggers/{name}/replay`) and the job it becomes.

A range is either two times (ISO-8601 with a zone; Kafka and S3) or two `{partition: offset}`
maps (Kafka only). Both ends are half-open: `from` is included, `to` is not. Kafka times select
records by the broker's time index (`offsets_for_times`); S3 times select objects by
`LastModified`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shared.models.common import Record, Spec

ReplayMode = Literal["missing", "all"]
ReplayState = Literal["pending", "running", "succeeded", "failed"]
Offsets = dict[int, int]
Bound = AwareDatetime | Offsets


class ReplayRequest(Spec):
    """What to re-read. `max_events` defaults to, and may not exceed, SLUICE_REPLAY_MAX_EVENTS."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Bound = Field(alias="from")
    to: Bound
    mode: ReplayMode = "missing"
    max_events: int | None = Field(default=None, ge=1)

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _check_bound(cls, value: Any) -> Any:
        # The error is reported under the field's name; the message need not repeat it.
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO-8601 time such as 2026-11-01T00:00:00Z"
                ) from None
            if moment.utcoffset() is None:
                raise ValueError(f"the time must name its zone, e.g. {value}Z")
            return moment
        if not isinstance(value, datetime | dict):
            raise ValueError("must be an ISO-8601 time or a {partition: offset} map")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> ReplayRequest:
        start, end = self.from_, self.to
        if isinstance(start, datetime) != isinstance(end, datetime):
            raise ValueError("to: must be a time when from is a time, an offset map when it is one")
        if isinstance(start, datetime) and isinstance(end, datetime):
            if start >= end:
                raise ValueError("to: must be after from")
            return self
        assert isinstance(start, dict) and isinstance(end, dict)
        if not start:
            raise ValueError("from: names no partition")
        if set(start) != set(end):
            raise ValueError("to: must name the same partitions as from")
        for partition in sorted(start):
            if partition < 0:
                raise ValueError(f"from: partition {partition} is negative")
            if start[partition] < 0:
                raise ValueError(f"from: offset of partition {partition} is negative")
            if end[partition] <= start[partition]:
                raise ValueError(f"to: offset of partition {partition} must be above from's")
        return self

    @property
    def by_offsets(self) -> bool:
        return isinstance(self.from_, dict)

    def offset_count(self) -> int:
        """How many offsets an offset-map range spans (0 for a time range)."""
        if not isinstance(self.from_, dict) or not isinstance(self.to, dict):
            return 0
        return sum(self.to[p] - self.from_[p] for p in self.from_)

    def bound_json(self, bound: Bound) -> Any:
        """A range end as stored in the job row."""
        if isinstance(bound, datetime):
            return bound.isoformat()
        return {str(p): o for p, o in sorted(bound.items())}


def parse_bound(value: Any) -> Bound:
    """A range end read back from the job row."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return {int(p): int(o) for p, o in value.items()}


class ReplayAccepted(Record):
    replay_id: int
    state: ReplayState


class ReplayOut(Record):
    """A replay job: where it stands and what became of the records it read."""

    id: int
    workspace: str
    trigger: str
    source: Literal["kafka", "s3"]
    mode: ReplayMode
    from_: Any = Field(serialization_alias="from")
    to: Any
    max_events: int
    state: ReplayState
    read: int
    admitted: int
    duplicate: int
    filtered: int
    other: int = Field(description="records with any other outcome (disabled, invalid, frozen...)")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ReplayJob(Record):
    """A claimed replay, as the listener carrying it out reads it."""

    id: int
    workspace_id: int
    trigger_id: int
    trigger_name: str
    source: Literal["kafka", "s3"]
    mode: ReplayMode
    range_from: Bound
    range_to: Bound
    max_events: int
