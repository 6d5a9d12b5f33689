"""Backfill requests: instances for every fire time in an interval, run as a group."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from shared.models.common import Priority, Record, Spec


class BackfillRequest(Spec):
    """POST .../workflows/{name}/backfill. Bounds are inclusive; naive datetimes are rejected."""

    start: datetime
    end: datetime
    parallelism: int = Field(default=1, ge=1, le=1000)
    priority: Priority | None = None
    order: Literal["asc", "desc"] = "asc"

    @model_validator(mode="after")
    def _check(self) -> BackfillRequest:
        for field in ("start", "end"):
            if getattr(self, field).tzinfo is None:
                raise ValueError(f"{field}: must carry a UTC offset")
        if self.end < self.start:
            raise ValueError("end: must not be before start")
        return self


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
