"""`sluice run scheduler`: scheduled instances for the fire times of published schedules.

Each tick reads the workflows that owe work (`schedule_state.next_fire_at` has come, or a publish
not yet seen) and settles each in ONE transaction: lock its `schedule_state` row (replicas skip a
row another holds), decide what is due with `ticks.decide`, create the instances
(`run_key` ``schedule@<fire time>``, UNIQUE per workflow, so no interleaving of replicas can make
two instances of one fire time), move the watermark and the next fire time. Between ticks the
loop sleeps until the earliest next fire time or the poll interval, and wakes at once on NOTIFY
`sluice_workflows` (publish, freeze, unfreeze).

"now" comes from a clock argument; in production it is the local clock corrected to the
database's, so replicas on different hosts agree with each other and with `workflows.updated_at`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.scheduler import metrics as scheduler_metrics
from services.scheduler.completions import serve_finishes
from services.scheduler.releases import serve_releases
from services.scheduler.ticks import MISFIRE_GRACE, RUN_ALL_CAP, Tick, decide
from services.scheduler.windows import serve_windows
from shared import metrics
from shared.db import events as event_repo
from shared.db import idempotency_keys
from shared.db import workflows as workflow_repo
from shared.db.errors import TRANSIENT
from shared.db.instances import Created, NewInstance, create_instances
from shared.db.pool import connect, create_pool
from shared.db.queries import load
from shared.fire_times import bizdate_of, schedule_run_key
from shared.lifecycle import wait_any
from shared.models.workflows import Schedule
from shared.settings import Settings

Q = load(__file__)
log = structlog.get_logger("sluice.scheduler")

Clock = Callable[[], datetime]
_TRANSIENT = TRANSIENT
# Sleeping exactly until a fire time can wake a hair early and find nothing due yet.
_WAKE_MARGIN_S = 0.001
_RETRY_S = 1.0
_CLOCK_SYNC_S = 60.0
_PRUNE_S = 3600.0
_RELISTEN_S = 1.0
# The termination listener reports a dropped connection; this re-check is its fallback.
_LISTEN_CHECK_S = 30.0


@dataclass(frozen=True, slots=True)
class Fired:
    """One instance the scheduler created (`state` is `cancelled` under overflow cancel_new)."""

    workflow_id: int
    workflow: str
    fire_time: datetime
    instance_id: int
    state: str


class Scheduler:
    """Settles due schedules against the database; holds no state between ticks."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        grace: timedelta = MISFIRE_GRACE,
        cap: int = RUN_ALL_CAP,
        batch: int = 200,
    ) -> None:
        self._pool = pool
        self._grace = grace
        self._cap = cap
        self._batch = batch

    async def tick(self, now: datetime, stop: asyncio.Event | None = None) -> list[Fired]:
        """Create every instance due at `now`; return them. Stops between schedules on `stop`."""
        fired, _ = await self._tick(now, stop)
        return fired

    async def _tick(self, now: datetime, stop: asyncio.Event | None) -> tuple[list[Fired], int]:
        """The instances created, and how many due schedules were left unsettled (held by
        another replica, or failed)."""
        fired: list[Fired] = []
        unsettled = 0
        seen: list[int] = []
        while stop is None or not stop.is_set():
            rows = await self._pool.fetch(Q["due_schedules"], now, self._batch, seen)
            for row in rows:
                if stop is not None and stop.is_set():
                    break
                seen.append(row["workflow_id"])
                try:
                    settled = await self._settle(row["workflow_id"], row["has_state"], now)
                except _TRANSIENT:
                    raise
                except Exception:
                    # One broken schedule must not hold up the others; it is retried later.
                    log.exception("schedule_tick_failed", workflow_id=row["workflow_id"])
                    settled = None
                if settled is None:
                    unsettled += 1
                else:
                    fired.extend(settled)
            if len(rows) < self._batch:
                break
        return fired, unsettled

    async def next_due(self) -> datetime | None:
        """The earliest next fire time of any known schedule."""
        value: datetime | None = await self._pool.fetchval(Q["next_due"])
        return value

    async def _settle(self, workflow_id: int, has_state: bool, now: datetime) -> list[Fired] | None:
        """Settle one workflow in one transaction; None when another replica holds it."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not has_state:
                await conn.execute(Q["ensure_state"], workflow_id)
            row = await conn.fetchrow(Q["lock_state"], workflow_id)
            if row is None:
                return None
            if row["type"] != "scheduled":
                # Remember the publish was seen; no watermark, so a later schedule starts afresh.
                await conn.execute(Q["save_state"], workflow_id, None, None, row["version"])
                return []
            schedule = Schedule.model_validate(row["schedule"])
            tick = decide(
                schedule,
                last_fire_at=row["last_fire_at"],
                same_schedule=row["same_schedule"],
                frozen=row["frozen"],
                changed_at=row["changed_at"],
                now=now,
                grace=self._grace,
                cap=self._cap,
            )
            created: list[Created | None] = []
            if tick.fires:
                loaded = await workflow_repo.load_version(conn, workflow_id, row["version"])
                created = await create_instances(
                    conn,
                    [
                        NewInstance(
                            version=loaded,
                            kind="scheduled",
                            cyctime=fire,
                            bizdate=bizdate_of(fire, schedule.timezone),
                            run_key=schedule_run_key(fire),
                        )
                        for fire in tick.fires
                    ],
                )
            await conn.execute(
                Q["save_state"], workflow_id, tick.watermark, tick.next_fire, row["version"]
            )
        fired = [
            Fired(workflow_id, row["name"], fire, made.id, made.state)
            for fire, made in zip(tick.fires, created, strict=True)
            if made is not None
        ]
        _report(row["name"], schedule, tick, fired, frozen=row["frozen"], now=now, cap=self._cap)
        return fired

    async def serve(
        self,
        stop: asyncio.Event,
        *,
        clock: Clock,
        poll_s: float,
        notified: asyncio.Event | None = None,
    ) -> None:
        """Tick, then sleep until the next fire time, the poll interval or a NOTIFY; until stop."""
        while not stop.is_set():
            unsettled = 0
            try:
                _, unsettled = await self._tick(clock(), stop)
                upcoming = await self.next_due()
            except _TRANSIENT as exc:
                log.warning("scheduler_tick_failed", error=str(exc))
                upcoming = None
            delay = poll_s
            if upcoming is not None:
                until = (upcoming - clock()).total_seconds() + _WAKE_MARGIN_S
                delay = min(poll_s, max(until, 0.0))
            if unsettled and delay < _RETRY_S:
                # What another replica holds (or what failed) is still due: retry, do not spin.
                delay = min(poll_s, _RETRY_S)
            await wait_any(stop, notified, delay)


def _report(
    workflow: str,
    schedule: Schedule,
    tick: Tick,
    fired: list[Fired],
    *,
    frozen: bool,
    now: datetime,
    cap: int,
) -> None:
    """Log and count one settled schedule (after commit: what is logged happened)."""
    with structlog.contextvars.bound_contextvars(workflow=workflow):
        for item in fired:
            delay = (now - item.fire_time).total_seconds()
            log.info(
                "schedule_fired",
                instance_id=item.instance_id,
                fire_time=item.fire_time.isoformat(),
                state=item.state,
                delay_s=round(delay, 3),
            )
            scheduler_metrics.SCHEDULE_DELAY.observe(max(delay, 0.0))
        duplicates = len(tick.fires) - len(fired)
        if duplicates:
            log.warning("schedule_fire_duplicate", fire_times=duplicates)
        if frozen and tick.dropped:
            log.info("schedule_fire_frozen", fire_times=tick.dropped)
        elif tick.late:
            log.warning(
                "schedule_misfire",
                policy=schedule.misfire,
                missed=tick.late,
                missed_over_cap=tick.late > cap,
                fired=tick.late - tick.dropped,
                dropped=tick.dropped,
            )
        outcomes = {
            "fired": len(fired),
            "duplicate": duplicates,
            "frozen" if frozen else "misfire_dropped": tick.dropped,
        }
        for outcome, count in outcomes.items():
            if count:
                scheduler_metrics.SCHEDULE_FIRES.labels(outcome).inc(count)
    if fired:
        metrics.INSTANCES_CREATED.labels("scheduled").inc(len(fired))


class DbClock:
    """The local clock corrected by its offset to the database's clock."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def sync(self, pool: asyncpg.Pool[Any]) -> None:
        """Measure the offset, assuming the database read the clock halfway through the call."""
        sent = datetime.now(UTC)
        database_now: datetime = await pool.fetchval(Q["database_clock"])
        received = datetime.now(UTC)
        self._offset = database_now - (sent + (received - sent) / 2)


async def _keep_clock_synced(clock: DbClock, pool: asyncpg.Pool[Any], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await wait_any(stop, None, _CLOCK_SYNC_S)
        try:
            await clock.sync(pool)
        except _TRANSIENT as exc:
            log.warning("scheduler_clock_sync_failed", error=str(exc))


async def _prune_dedup_records(
    pool: asyncpg.Pool[Any], retention_days: int, stop: asyncio.Event
) -> None:
    """Forget admissions older than the dedup retention and expired run-request idempotency
    keys, at start and then hourly.

    Pruning is idempotent, so every scheduler replica may do it; the scheduler hosts it because
    it is the one service whose job is acting on the passage of time.
    """
    while not stop.is_set():
        try:
            pruned = await event_repo.prune_admissions(pool, retention_days)
            if pruned:
                log.info("dedup_records_pruned", count=pruned, retention_days=retention_days)
            expired = await idempotency_keys.prune(pool)
            if expired:
                log.info("idempotency_keys_pruned", count=expired)
        except _TRANSIENT as exc:
            log.warning("dedup_prune_failed", error=str(exc))
        await wait_any(stop, None, _PRUNE_S)


async def _listen(dsn: str, notified: asyncio.Event, stop: asyncio.Event) -> None:
    """LISTEN on a dedicated connection; reconnect when it drops (polling covers the gap)."""

    def wake(*_: object) -> None:
        notified.set()

    lost = asyncio.Event()
    while not stop.is_set():
        lost.clear()
        try:
            conn = await connect(dsn, "sluice-scheduler-listen")
        except _TRANSIENT as exc:
            log.warning("scheduler_listen_failed", error=str(exc))
            await wait_any(stop, None, _RELISTEN_S)
            continue
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(workflow_repo.CHANNEL, wake)
            # Schedules may have changed while not listening.
            notified.set()
            while not stop.is_set() and not conn.is_closed():
                await wait_any(stop, lost, _LISTEN_CHECK_S)
        finally:
            if not conn.is_closed():
                await conn.close()
        if not stop.is_set():
            log.warning("scheduler_listen_lost")
            await wait_any(stop, None, _RELISTEN_S)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """The scheduler service: tick loop, LISTEN and clock sync, supervised together."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database_url,
            min_size=1,
            max_size=4,
            application_name="sluice-scheduler",
        )
        stack.push_async_callback(pool.close)
        clock = DbClock()
        await clock.sync(pool)
        notified = asyncio.Event()
        scheduler = Scheduler(pool)
        log.info("scheduler_started", poll_interval_s=settings.poll_interval_s)
        async with asyncio.TaskGroup() as group:
            group.create_task(_listen(settings.database_url, notified, stop))
            group.create_task(_keep_clock_synced(clock, pool, stop))
            group.create_task(_prune_dedup_records(pool, settings.dedup_retention_days, stop))
            group.create_task(
                serve_finishes(pool, settings.database_url, stop, poll_s=settings.poll_interval_s)
            )
            group.create_task(serve_releases(pool, stop, poll_s=settings.poll_interval_s))
            group.create_task(serve_windows(pool, stop, poll_s=settings.poll_interval_s))
            serve = scheduler.serve(
                stop, clock=clock, poll_s=settings.poll_interval_s, notified=notified
            )
            group.create_task(serve)
        log.info("scheduler_stopped")
