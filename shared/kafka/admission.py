"""Admit a fetched batch in one intake transaction, isolating events that break the transaction.

`admit_batch` records every event (contract 2). When the batch transaction fails for a reason the
database gives about the data rather than about itself (say, a value it cannot store), retrying
the batch would fail forever and stall its partitions. So the batch is split: each event is
admitted alone, and an event that still fails is recorded `invalid` with the error instead.
Failures of the database itself (connection lost, shutting down, out of connections, deadlock)
are `transient`: they are raised, the caller retries the whole batch after a backoff, and
deduplication absorbs what an earlier try already admitted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from shared.models.events import AdmitResult, IncomingEvent

log = structlog.get_logger("sluice.kafka")

# SQLSTATE classes of failures of the server or the connection, not of the statement's data:
# 08 connection exception, 40 transaction rollback (deadlock, serialization), 53 insufficient
# resources, 57 operator intervention (shutdown, cancel), 58 system error (I/O).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_MAX_ERROR_CHARS = 2000


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed without anything about the events changing."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _TRANSIENT_CLASSES
    return False


def describe(exc: BaseException) -> str:
    """A one-line reason for an audit record: type and message, bounded, storable as text."""
    text = f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd")
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


Submit = Callable[[list[IncomingEvent]], Awaitable[list[list[AdmitResult]]]]
"""One intake transaction for a list of events: ``partial(admit_batch, pool)`` or a group commit
such as the storage listener's ``Admitter.submit``."""


async def admit(submit: Submit, events: list[IncomingEvent]) -> list[list[AdmitResult]]:
    """Admit `events`: one transaction, or one per event when the batch cannot commit.

    Returns per event what `admit_batch` returned. Raises only transient errors (see the module
    docstring) and errors that even recording an event as invalid runs into: in both cases no
    event of the batch may be acknowledged to Kafka yet.
    """
    try:
        return await submit(events)
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning(
            "kafka_batch_isolating_events", events=len(events), error=describe(exc), exc_info=True
        )
    results: list[list[AdmitResult]] = []
    for event in events:
        try:
            results.extend(await submit([event]))
        except Exception as exc:
            if is_transient(exc):
                raise
            reason = f"cannot be admitted: {describe(exc)}"
            log.warning("kafka_event_unadmittable", ref=event.ref, error=reason)
            invalid = IncomingEvent(
                source=event.source,
                subject=event.subject,
                ref=event.ref,
                error=reason,
                received_at=event.received_at,
            )
            results.extend(await submit([invalid]))
    return results
