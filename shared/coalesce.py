"""Coalescing windows (trigger option `coalesce`): which window each admitted event joins.

Pure: the open window's state and the clock are arguments. A window of a (trigger, workflow) pair
opens with the first event admitted for the workflow, takes every later one until `window_s` has
passed since it opened or it holds `max_events`, and then closes into one instance. The database
side (shared/db/coalesce_windows.py) applies the plan under the open window's row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.models.triggers import Coalesce, KafkaTriggerSpec, S3TriggerSpec


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """The state of a window that has not closed yet."""

    opened_at: datetime
    closes_at: datetime
    max_events: int
    events: int


@dataclass(frozen=True, slots=True)
class Segment:
    """`count` consecutive events joining one window: the open one (`new` False) or a window
    opened at `now`. `closes`: the window is full afterwards and closes in the same transaction.
    """

    new: bool
    count: int
    closes: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What admitting a run of events does: close the open window first (it was due), then fill
    the segments in order."""

    close_open: bool
    segments: tuple[Segment, ...]


def coalesce_of(spec: object) -> Coalesce | None:
    """The `coalesce` option of a trigger spec (None: every event is its own instance)."""
    if isinstance(spec, KafkaTriggerSpec | S3TriggerSpec):
        return spec.coalesce
    return None


def is_due(window: OpenWindow, now: datetime) -> bool:
    """A window takes no more events once its time is up or it is full."""
    return now >= window.closes_at or window.events >= window.max_events


def closes_at(opened_at: datetime, option: Coalesce) -> datetime:
    """When a window opened at `opened_at` stops taking events."""
    return opened_at + timedelta(seconds=option.window_s)


def plan(window: OpenWindow | None, arriving: int, now: datetime, option: Coalesce) -> Plan:
    """Split `arriving` events (in admission order) over the open window and new ones.

    The open window keeps its own `max_events` (fixed when it opened); new windows take the
    trigger's current option. Each full window closes at once, so a burst of N events makes
    ceil(N / max_events) windows, only the last of which may stay open.
    """
    if arriving < 0:
        raise ValueError("arriving must not be negative")
    segments: list[Segment] = []
    left = arriving
    close_open = window is not None and is_due(window, now)
    if window is not None and not close_open and left:
        room = window.max_events - window.events
        take = min(room, left)
        segments.append(Segment(new=False, count=take, closes=take == room))
        left -= take
    while left:
        take = min(option.max_events, left)
        segments.append(Segment(new=True, count=take, closes=take == option.max_events))
        left -= take
    return Plan(close_open=close_open, segments=tuple(segments))
