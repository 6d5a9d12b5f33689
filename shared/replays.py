"""The replay job loop both listeners run: claim a replay of their source, carry it out, record it.

The API only writes the job row (`shared.db.replays`); the listener that owns the source claims it
(`FOR UPDATE SKIP LOCKED`, so one replica carries out each job), reads the range through the
source-specific `carry` function, and hands what it read to `Feed.admit`. Every event goes through
`shared.intake` marked with its `ReplayOrigin`: admitted for the replayed trigger only, under the
normal dedup key (`missing`) or the replay's own (`all`), so carrying a job out again after a
crash or a stop never makes a second instance.

A queued job wakes the listeners with NOTIFY `sluice_replays` (polling is the fallback).
Progress (counts) and the lease are written after every admitted batch and renewed while the
source is being read; a listener that stops mid-job hands it back (`pending`), one that dies
leaves it to be claimed again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import asyncpg
import structlog
from pydantic import BaseModel, ValidationError

from shared.backpressure import Backpressure
from shared.db import replays as replay_repo
from shared.db import triggers as trigger_repo
from shared.db.errors import NotFound
from shared.db.pool import Executor, connect
from shared.intake import admit_batch
from shared.lifecycle import wait_any
from shared.models.events import IncomingEvent, ReplayOrigin
from shared.models.replays import ReplayJob

log = structlog.get_logger("sluice.replay")

HELD_WAIT_S = 1.0
"""How often a replay held back by `policy.max_waiting` looks again."""


SpecT = TypeVar("SpecT", bound=BaseModel)


class ReplayError(Exception):
    """A replay that cannot be carried out; the message is shown on the job, naming the cause."""


async def replayed_trigger(
    pool: Executor, job: ReplayJob, kind: str, spec_type: type[SpecT]
) -> SpecT:
    """The job's `kind` trigger as it is now; ReplayError when gone, replaced or invalid."""
    try:
        trigger = await trigger_repo.get(pool, job.workspace_id, job.trigger_name)
    except NotFound:
        raise ReplayError(f"trigger {job.trigger_name!r} no longer exists") from None
    if trigger.id != job.trigger_id or trigger.type != kind:
        raise ReplayError(f"trigger {job.trigger_name!r} was replaced since the request")
    try:
        return spec_type.model_validate(trigger.spec)
    except ValidationError as exc:
        raise ReplayError(f"trigger {job.trigger_name!r} is invalid: {exc}") from None


class LostClaim(Exception):
    """The job row is no longer this listener's (released, or claimed by another after a lease
    ran out): stop without touching it."""


class Feed:
    """Admits the events a job read, as replays of its trigger, and records the counts."""

    def __init__(self, pool: Executor, job: ReplayJob, owner: str) -> None:
        self._pool = pool
        self._job = job
        self._owner = owner
        self._origin = ReplayOrigin(replay_id=job.id, trigger_id=job.trigger_id, mode=job.mode)
        self._pressure = Backpressure("replay")
        self.counts: Counter[str] = Counter()

    async def admit(self, events: list[IncomingEvent]) -> None:
        """Admit one batch in one intake transaction, then add its counts to the job.

        While a workflow the trigger feeds is at its `policy.max_waiting`, wait (renewing the
        lease): a replay queues no more runs than live events would."""
        if not events:
            return
        await self._while_held()
        marked = [e.model_copy(update={"replay": self._origin}) for e in events]
        results = await admit_batch(self._pool, marked)
        counts = replay_repo.tally(results)
        self.counts.update(counts)
        if not await replay_repo.add_progress(self._pool, self._job.id, self._owner, counts):
            raise LostClaim

    async def _while_held(self) -> None:
        held = False
        while True:
            await self._pressure.refresh(self._pool)
            hold = next(
                (h for h in self._pressure.holds() if h.trigger_id == self._job.trigger_id), None
            )
            if hold is None:
                if held:
                    log.info("replay_resumed")
                return
            if not held:
                log.info("replay_held", reason=hold.reason)
                held = True
            await self.heartbeat()
            await asyncio.sleep(HELD_WAIT_S)

    async def heartbeat(self) -> None:
        """Renew the lease while reading (listing a bucket, looking up offsets)."""
        if not await replay_repo.add_progress(self._pool, self._job.id, self._owner, Counter()):
            raise LostClaim


Carry = Callable[[ReplayJob, Feed], Coroutine[Any, Any, None]]


def owner_id(service: str) -> str:
    """Who holds a claimed job: unique per process, also across pods whose processes are all
    pid 1, so a listener that lost its lease can never write to the job's next claim."""
    return f"{service}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def run_replays(
    pool: Executor,
    source: Literal["kafka", "s3"],
    carry: Carry,
    stop: asyncio.Event,
    *,
    owner: str,
    poll_interval_s: float,
    lease_s: float,
    dsn: str | None = None,
) -> None:
    """Carry out the replays of `source` one at a time until `stop`.

    With `dsn`, a new job wakes the loop at once (NOTIFY `sluice_replays` on a connection of its
    own); `poll_interval_s` is the fallback, and the only wake-up without it.
    """
    notified = asyncio.Event()
    conn: asyncpg.Connection[Any] | None = None

    def wake(*_: object) -> None:
        notified.set()

    try:
        while not stop.is_set():
            if dsn is not None and (conn is None or conn.is_closed()):
                conn = await _listen(dsn, wake)
            try:
                job = await replay_repo.claim(pool, source, owner, lease_s)
            except Exception as exc:
                # The database is down or restarting: the listener's own loop reports it; retry.
                log.warning(
                    "replay_claim_failed", source=source, error=f"{type(exc).__name__}: {exc}"
                )
                job = None
            if job is None:
                await wait_any(stop, notified if conn is not None else None, poll_interval_s)
                continue
            try:
                await _carry_out(pool, job, carry, stop, owner, lease_s)
            except Exception as exc:
                # Recording the outcome failed (the database went away): the job keeps its lease
                # and is claimed again once it runs out; the listener itself carries on.
                log.error(
                    "replay_not_recorded", replay_id=job.id, error=f"{type(exc).__name__}: {exc}"
                )
                await wait_any(stop, None, poll_interval_s)
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=5)


async def _listen(dsn: str, wake: Callable[..., None]) -> asyncpg.Connection[Any] | None:
    """A connection listening for new replay jobs, or None (polling only) when it cannot open."""
    conn: asyncpg.Connection[Any] | None = None
    try:
        async with asyncio.timeout(10):
            conn = await connect(dsn, "sluice-replays-listen")
            await conn.add_listener(replay_repo.CHANNEL, wake)
    except Exception as exc:
        if conn is not None:
            conn.terminate()
        log.warning("replay_notifications_unavailable", error=f"{type(exc).__name__}: {exc}")
        return None
    return conn


async def _carry_out(
    pool: Executor, job: ReplayJob, carry: Carry, stop: asyncio.Event, owner: str, lease_s: float
) -> None:
    feed = Feed(pool, job, owner)
    with structlog.contextvars.bound_contextvars(replay_id=job.id, trigger=job.trigger_name):
        log.info("replay_started", source=job.source, mode=job.mode)
        work = asyncio.create_task(carry(job, feed))
        beat = asyncio.create_task(_beat(feed, lease_s / 3))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            beat.cancel()
            if not work.done():
                work.cancel()
            with contextlib.suppress(BaseException):
                await work
        if work.cancelled():
            await replay_repo.release(pool, job.id, owner)
            log.info("replay_released", reason="listener stopping", **feed.counts)
            return
        exc = work.exception()
        if isinstance(exc, LostClaim):
            log.warning("replay_claim_lost")
            return
        if exc is None:
            await replay_repo.finish(pool, job.id, owner)
            log.info("replay_succeeded", **feed.counts)
            return
        error = str(exc) if isinstance(exc, ReplayError) else f"{type(exc).__name__}: {exc}"
        await replay_repo.finish(pool, job.id, owner, error=error)
        log.error("replay_failed", error=error, **feed.counts)


async def _beat(feed: Feed, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        # A missed beat is retried at the next; the job's own writes report a lost claim.
        with contextlib.suppress(Exception):
            await feed.heartbeat()
