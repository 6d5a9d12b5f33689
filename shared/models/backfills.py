"""Backfill requests: instances for every fire time in an interval, run as a group."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from shared.models.bizdates import FORMS, is_bizdate_text, parse_bizdate
from shared.models.common import Name, Priority, Record, Spec

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _bizdate_or_time(value: Any) -> datetime | date:
    # A bound spelled as a day is a business date; anything else must be a time.
    if is_bizdate_text(value) or (isinstance(value, date) and not isinstance(value, datetime)):
        return parse_bizdate(value)
    try:
        return _TIME.validate_python(value)
    except ValidationError:
        raise ValueError(
            f"expected a time with a UTC offset (2026-03-01T00:00:00Z) or a business date as "
            f"{FORMS}"
        ) from None


Bound = Annotated[
    datetime | date,
    PlainValidator(_bizdate_or_time),
    PlainSerializer(lambda bound: bound.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": r"^\d{4}-?\d{2}-?\d{2}$"},
            ],
            "description": f"a time with a UTC offset, or a business date as {FORMS}",
        }
    ),
]


class BackfillRequest(Spec):
    """POST .../workflows/{name}/backfill. Bounds are inclusive; naive datetimes are rejected.

    A bound given as a business date covers the fire times whose bizdate (the day before the fire
    time, in the workflow's zone) is that day: `start=20260301, end=20260307` backfills the
    bizdates 1 to 7 March, as a DataWorks user means it.
    """

    start: Bound
    end: Bound
    parallelism: int = Field(default=1, ge=1, le=1000)
    priority: Priority | None = None
    order: Literal["asc", "desc"] = "asc"

    @model_validator(mode="after")
    def _check(self) -> BackfillRequest:
        for field in ("start", "end"):
            value = getattr(self, field)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{field}: must carry a UTC offset")
        if isinstance(self.start, datetime) == isinstance(self.end, datetime):
            if self.end < self.start:
                raise ValueError("end: must not be before start")
        return self

    def bounds(self, zone: str) -> tuple[datetime, datetime]:
        """The interval of fire times, business-date bounds resolved in the workflow's `zone`."""
        return _first_fire_of(self.start, zone), _last_fire_of(self.end, zone)


def _first_fire_of(bound: datetime | date, zone: str) -> datetime:
    if isinstance(bound, datetime):
        return bound
    # Bizdate D belongs to fire times on day D+1; the first of them is that day's midnight.
    return datetime.combine(bound + timedelta(days=1), time(), ZoneInfo(zone))


def _last_fire_of(bound: datetime | date, zone: str) -> datetime:
    if isinstance(bound, datetime):
        return bound
    return datetime.combine(bound + timedelta(days=2), time(), ZoneInfo(zone)) - timedelta(
        microseconds=1
    )


class BackfillOut(Record):
    """A backfill group: its request, its instances in run order, and how many are in each state."""

    id: int
    workflow: str
    start: datetime
    end: datetime
    parallelism: int
    priority: int | None
    order: Literal["asc", "desc"]
    instance_ids: list[int]
    created_at: datetime
    states: dict[str, int] = Field(default_factory=dict)


class GroupBackfillRequest(BackfillRequest):
    """Several workflows backfilled together: their dependencies on each other are honoured
    (each day's upstream run before its dependants), days in parallel up to `parallelism` per
    workflow."""

    workflows: list[Name] = Field(min_length=1, max_length=100)


class BackfillGroupOut(Record):
    """The backfills of a group, upstream first; `group_id` is the first one's id."""

    group_id: int
    backfills: list[BackfillOut]
