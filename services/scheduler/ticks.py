"""What a schedule owes right now.

Pure: no clock is read and nothing is stored; the scheduler passes `now` and the schedule's
bookkeeping (`schedule_state`) in and writes the answer back in one transaction.

Bookkeeping is a watermark: every fire time at or before `last_fire_at` has been accounted for
(fired, dropped by the misfire policy, or passed while frozen). A tick accounts for the fire
times in ``(since, now]`` and moves the watermark to `now`.

* A schedule seen for the first time starts at the moment it was published (the workflow's last
  change, or `now` if that lies ahead): a new schedule never backfills the past, whatever its
  `start_at` says. A republished schedule whose cron, time zone, bounds or misfire policy changed
  starts over the same way, so a new cron never "catches up" on fire times it never had.
* Fire times at most `grace` old are on time and always fire (the scheduler may wake a little
  late). Older ones were missed while no scheduler ran, and the misfire policy decides:
  ``run_once`` fires only the latest of them, ``run_all`` fires them all (at most `cap`, the most
  recent ones), ``skip`` fires none.
* A frozen workflow fires nothing; its fire times are accounted for as they pass, so unfreezing
  does not replay them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.cron import fires_between, latest_fire_at_or_before, next_fire
from shared.models.workflows import Schedule

__all__ = [
    "MISFIRE_GRACE",
    "RUN_ALL_CAP",
    "Tick",
    "decide",
]

MISFIRE_GRACE = timedelta(seconds=60)
RUN_ALL_CAP = 1000
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Tick:
    """The decision for one schedule at one instant.

    `fires`: fire times to create instances for, ascending. `watermark`: the new `last_fire_at`.
    `next_fire`: the first fire time after the watermark (None: the schedule is over).
    `late`: due fire times older than the grace; `dropped`: due fire times not fired (by the
    misfire policy, or because the workflow is frozen). Both count up to ``cap + 1``: beyond the
    cap only "more than cap" is known, and counting further would cost time for nothing.
    """

    fires: tuple[datetime, ...]
    watermark: datetime
    next_fire: datetime | None
    late: int = 0
    dropped: int = 0


def _since(
    last_fire_at: datetime | None, same_schedule: bool, changed_at: datetime, now: datetime
) -> datetime:
    """The instant after which fire times are still owed."""
    start = min(changed_at, now)
    if last_fire_at is None:
        return start
    if not same_schedule:
        return max(last_fire_at, start)
    return last_fire_at


def _fires(schedule: Schedule, since: datetime, until: datetime, limit: int) -> list[datetime]:
    """Fire times in (since, until] within the schedule's bounds, ascending, the first `limit`."""
    return fires_between(
        schedule.cron,
        schedule.timezone,
        since,
        until,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
        limit=limit,
    )


def _latest(schedule: Schedule, since: datetime, until: datetime, count: int) -> list[datetime]:
    """The last `count` fire times in (since, until], ascending, found walking backwards."""
    found: list[datetime] = []
    at = until
    while len(found) < count:
        fire = latest_fire_at_or_before(
            schedule.cron,
            schedule.timezone,
            at,
            start_at=schedule.start_at,
            end_at=schedule.end_at,
        )
        if fire is None or fire <= since:
            break
        found.append(fire)
        at = fire - _MICROSECOND
    found.reverse()
    return found


def decide(
    schedule: Schedule,
    *,
    last_fire_at: datetime | None,
    same_schedule: bool,
    frozen: bool,
    changed_at: datetime,
    now: datetime,
    grace: timedelta = MISFIRE_GRACE,
    cap: int = RUN_ALL_CAP,
) -> Tick:
    """Which fire times to create instances for at `now`, and the bookkeeping to store.

    `last_fire_at` is the stored watermark (None for a schedule never seen); `same_schedule`
    tells whether it was computed for this very schedule; `changed_at` is when the workflow was
    last published, frozen or unfrozen.
    """
    since = _since(last_fire_at, same_schedule, changed_at, now)
    watermark = max(since, now)
    following = next_fire(
        schedule.cron,
        schedule.timezone,
        watermark,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
    )
    if since >= now:
        return Tick((), watermark, following)
    if frozen:
        passed = _fires(schedule, since, now, cap + 1)
        return Tick((), watermark, following, dropped=len(passed))

    cutoff = now - grace
    on_time = _fires(schedule, max(since, cutoff), now, cap)
    if since >= cutoff:
        return Tick(tuple(on_time), watermark, following)
    late = _fires(schedule, since, cutoff, cap + 1)
    if schedule.misfire == "run_all":
        kept = late if len(late) <= cap else _latest(schedule, since, cutoff, cap)
    elif schedule.misfire == "run_once":
        kept = late[-1:] if len(late) <= cap else _latest(schedule, since, cutoff, 1)
    else:
        kept = []
    return Tick(
        tuple(kept + on_time), watermark, following, late=len(late), dropped=len(late) - len(kept)
    )
