"""Group commit: concurrent submissions of events share one intake transaction.

Each webhook request, SQS receive or Kafka batch submits its events and waits for the result.
One worker takes everything queued at that moment (up to `max_batch` events) and admits it with
one `admit_batch` call, so a burst of single-record webhook requests costs one commit instead of
one per request. An idle listener admits at once: nothing waits for a batch to fill.

A failed transaction is retried per submission, so one poisonous body fails only its own
request (which its source then redelivers) instead of every request that shared the batch.
Each submitter learns the outcome only after the transaction committed (contract 3).

Backpressure (`policy.max_waiting`): a submission made with `hold=True` (webhook, SQS) is checked
against the counts read once per batch; one with an event matching a held trigger is not admitted
at all and fails with `HeldBack`, so its source keeps it and offers it again later.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from services.storage_listener import metrics
from shared.backpressure import Backpressure, HeldBack
from shared.db.pool import Executor
from shared.intake import admit_batch
from shared.models.events import AdmitResult, IncomingEvent

log = structlog.get_logger("sluice.storage_listener")


class AdmitterClosed(RuntimeError):
    """The admitter no longer accepts events (the service is stopping)."""


@dataclass
class _Submission:
    events: list[IncomingEvent]
    hold: bool = False
    done: asyncio.Future[list[list[AdmitResult]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Admitter:
    """Admits submitted events in shared transactions; run `run()` as a task, then `close()`."""

    def __init__(
        self,
        pool: Executor,
        *,
        max_batch: int = 1000,
        max_queued: int = 10_000,
        workers: int = 1,
        backpressure: Backpressure | None = None,
    ) -> None:
        self._pool = pool
        self._backpressure = backpressure
        self._max_batch = max_batch
        self._workers = workers
        # Bounded: when the database is slower than the sources, submitters wait (backpressure).
        self._queue: asyncio.Queue[_Submission | None] = asyncio.Queue(max_queued)
        self._closed = False

    async def submit(
        self, events: list[IncomingEvent], *, hold: bool = False
    ) -> list[list[AdmitResult]]:
        """Admit `events`; returns per event the results of `admit_batch` once committed.

        Raises what the transaction raised when admission failed, and with `hold`, `HeldBack`
        when an event matches a held trigger; the caller must not acknowledge its source then.
        """
        if not events:
            return []
        if self._closed:
            raise AdmitterClosed("the storage listener is stopping")
        submission = _Submission(list(events), hold)
        await self._queue.put(submission)
        return await submission.done

    def close(self) -> None:
        """Stop accepting submissions; `run()` returns once everything queued is admitted."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    async def run(self) -> None:
        """Admit queued submissions until `close()`, with `workers` transactions in flight.

        One worker (the default) keeps event ids in arrival order and cannot deadlock; a queue
        that grows while a transaction is in flight makes the next batch larger, so throughput
        follows load. More workers overlap database round trips (a remote database) at the cost
        of both; a deadlock between them is retried per submission.
        """
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                self._queue.put_nowait(None)  # for the other workers
                return
            batch = [first]
            size = len(first.events)
            while size < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.put_nowait(None)
                    break
                batch.append(item)
                size += len(item.events)
            await self._admit(batch)

    async def _held_back(self, batch: list[_Submission]) -> list[_Submission]:
        """The submissions of `batch` to admit now; the others fail with `HeldBack`."""
        gate = self._backpressure
        if gate is None or not any(s.hold for s in batch):
            return batch
        try:
            await gate.refresh(self._pool)
        except Exception as exc:
            # The admission meets the same database; until it answers, the last counts stand.
            log.warning("backpressure_check_failed", error=f"{type(exc).__name__}: {exc}")
        kept = []
        for submission in batch:
            hold = None
            if submission.hold:
                hold = next(filter(None, map(gate.holding, submission.events)), None)
            if hold is None:
                kept.append(submission)
            elif not submission.done.done():
                submission.done.set_exception(HeldBack(hold))
        return kept

    async def _admit(self, batch: list[_Submission]) -> None:
        batch = await self._held_back(batch)
        if not batch:
            return
        events = [e for s in batch for e in s.events]
        try:
            results = await admit_batch(self._pool, events)
        except Exception as exc:
            if len(batch) > 1:
                log.warning("admit_batch_retried_per_submission", submissions=len(batch))
                for submission in batch:
                    await self._admit([submission])
                return
            if not batch[0].done.done():
                batch[0].done.set_exception(exc)
            return
        metrics.ADMIT_BATCH_EVENTS.observe(len(events))
        offset = 0
        for submission in batch:
            count = len(submission.events)
            if not submission.done.done():
                submission.done.set_result(results[offset : offset + count])
            offset += count
