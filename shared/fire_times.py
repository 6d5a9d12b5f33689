"""The fire times of a run and what follows from them: bizdate, run keys, backfill fire times.

Pure: the scheduler (scheduled runs) and backfill creation (asked for through the API) both use
them, so a backfill instance gets exactly the cyctime, bizdate and key shape a scheduled run of
the same fire time would.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.cron import fires_between
from shared.models.workflows import WorkflowSpec

# What a backfill of a workflow without a schedule runs: once per day, at midnight in its zone.
DAILY = "0 0 * * *"
_MICROSECOND = timedelta(microseconds=1)


def bizdate_of(cyctime: datetime, timezone: str) -> date:
    """The business date of a run: the day before cyctime's date in the workflow's zone."""
    return cyctime.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def _stamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_run_key(fire: datetime) -> str:
    """The exactly-once key of a scheduled fire: ``schedule@2026-11-20T18:00:00Z``."""
    return f"schedule@{_stamp(fire)}"


def backfill_run_key(backfill_id: int, fire: datetime) -> str:
    """The key of one backfill instance: ``backfill:7@2026-11-20T18:00:00Z``."""
    return f"backfill:{backfill_id}@{_stamp(fire)}"


def backfill_times(
    spec: WorkflowSpec, start: datetime, end: datetime, *, limit: int
) -> list[datetime]:
    """Fire times t with ``start <= t <= end``, ascending, at most `limit` (the earliest).

    A scheduled workflow uses its cron and time zone; the schedule's `start_at`/`end_at` do not
    apply (reprocessing history before a schedule began is what a backfill is for). A workflow
    without a schedule gets one fire time per day, at midnight in its time zone.
    """
    cron = spec.schedule.cron if spec.schedule is not None else DAILY
    return fires_between(cron, spec.zone, start - _MICROSECOND, end, limit=limit)
