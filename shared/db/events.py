"""The event audit trail: what arrived and, per trigger and workflow, what became of it."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.db.triggers import SPEC_ADAPTER
from shared.matching import match
from shared.models.events import EventOut, OutcomeOut

Q = load(__file__)


async def _with_outcomes(conn: Executor, rows: list[asyncpg.Record]) -> list[EventOut]:
    ids = [r["id"] for r in rows]
    outcomes: dict[int, list[OutcomeOut]] = {}
    for o in await conn.fetch(Q["outcomes_of"], ids):
        data = dict(o)
        outcomes.setdefault(data.pop("event_id"), []).append(OutcomeOut(**data))
    return [EventOut(**dict(r), outcomes=outcomes.get(r["id"], [])) for r in rows]


async def list_for(
    conn: Executor,
    workspace_id: int,
    *,
    trigger: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
    platform: bool = False,
) -> list[EventOut]:
    """Newest first; `before_id` is the cursor (the last id of the previous page).

    Events that matched no workspace's trigger are included only for `platform` readers.
    """
    rows = await conn.fetch(
        Q["list_events"], workspace_id, before_id, since, trigger, outcome, limit, platform
    )
    return await _with_outcomes(conn, rows)


async def get(
    conn: Executor, workspace_id: int, event_id: int, *, platform: bool = False
) -> EventOut:
    row = await conn.fetchrow(Q["get_event"], event_id, workspace_id, platform)
    if row is None:
        raise NotFound("event", event_id)
    return await _explained(conn, workspace_id, (await _with_outcomes(conn, [row]))[0])


async def _explained(conn: Executor, workspace_id: int, event: EventOut) -> EventOut:
    """The event with a verdict for every trigger that watched its source.

    With many triggers on one topic or bucket, intake stores verdicts only for the index's
    candidates (`shared.trigger_set`); the others are matched here against the stored message,
    with the trigger as it is now, and say so.
    """
    message = event.payload
    if event.source not in ("kafka", "s3") or event.error or event.payload_truncated:
        return event
    if event.replay_id is not None:
        # A replay re-reads its source for one trigger; the others were never asked.
        return event
    if not isinstance(message, dict):
        return event
    stored = {o.trigger for o in event.outcomes if o.trigger is not None}
    rows = await conn.fetch(
        Q["watching_triggers"], workspace_id, event.source, event.subject, event.received_at
    )
    derived: list[OutcomeOut] = []
    for r in rows:
        if r["name"] in stored:
            continue
        if not r["enabled"]:
            outcome, detail = "disabled", "trigger is disabled"
        else:
            verdict = match(SPEC_ADAPTER.validate_python(r["spec"]), message)
            if verdict.matched:
                outcome = "filtered"
                detail = "not a candidate when the event arrived (the trigger changed since)"
            else:
                outcome = "invalid" if verdict.error else "filtered"
                detail = str(verdict.reason)
        derived.append(
            OutcomeOut(
                trigger=r["name"],
                workflow=None,
                outcome=outcome,
                instance_ids=[],
                detail=f"{detail} (worked out when read)",
            )
        )
    if not derived:
        return event
    return event.model_copy(update={"outcomes": [*event.outcomes, *derived]})


async def prune_admissions(conn: Executor, retention_days: int) -> int:
    """Forget dedup records older than the retention."""
    status = await conn.execute(Q["prune_admissions"], retention_days)
    return int(status.split()[-1])
