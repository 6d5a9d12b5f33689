"""Trigger type `workflow`: admit one event per finished upstream instance (DESIGN.md 8).

The instance's final state and its `workflow_finishes` outbox row are written in one transaction
(migration 0013), so a finish is never lost however the executor dies. Here each row becomes an
event through the common intake path (`admit`: matching, dedup, audit, instances) and is deleted
in the same transaction. A crash before commit leaves the row for the next pass; the admission's
UNIQUE dedup key (upstream instance id and state, or its generation with `refire_on_rerun`) makes
a replay of an admitted row a `duplicate`: one downstream run per finish, never two.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import structlog

from shared.db.errors import TRANSIENT
from shared.db.pool import Connection, connect
from shared.db.queries import load
from shared.db.triggers import workflow_subject
from shared.intake import admit_batch
from shared.lifecycle import wait_any
from shared.models.events import IncomingEvent

Q = load(__file__)
log = structlog.get_logger("sluice.scheduler.completions")

CHANNEL = "sluice_workflow_finishes"
BATCH = 100
_TRANSIENT = TRANSIENT
_RETRY_S = 1.0


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _message(conn: Connection, row: asyncpg.Record) -> dict[str, Any]:
    outputs = {
        str(r["name"]): _json(r["outputs"]) or {}
        for r in await conn.fetch(Q["leaf_outputs"], row["instance_id"])
    }
    bizdate = row["bizdate"]
    return {
        "workflow": row["workflow"],
        "instance_id": int(row["instance_id"]),
        "state": row["state"],
        "bizdate": None if bizdate is None else bizdate.strftime("%Y%m%d"),
        "outputs": outputs,
        "generation": int(row["generation"]),
    }


async def admit_finishes(pool: asyncpg.Pool[Any], batch: int = BATCH) -> int:
    """Admit up to `batch` finished instances; return how many rows were handled."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(Q["claim_finishes"], batch)
        if not rows:
            return 0
        events = [
            IncomingEvent(
                source="workflow",
                subject=workflow_subject(int(r["workspace_id"]), str(r["workflow"])),
                ref=f"{r['workflow']}/instance/{r['instance_id']}#{r['generation']}",
                received_at=r["created_at"],
                message=await _message(conn, r),
            )
            for r in rows
        ]
        await admit_batch(conn, events)
        await conn.execute(Q["delete_finishes"], [int(r["id"]) for r in rows])
    return len(rows)


async def serve_finishes(
    pool: asyncpg.Pool[Any], dsn: str, stop: asyncio.Event, *, poll_s: float
) -> None:
    """Admit finishes as NOTIFY announces them, polling every `poll_s` as the fallback."""
    notified = asyncio.Event()
    listener = asyncio.create_task(_listen(dsn, notified, stop))
    try:
        while not stop.is_set():
            notified.clear()
            try:
                while await admit_finishes(pool) == BATCH and not stop.is_set():
                    pass
            except _TRANSIENT as exc:
                log.warning("workflow_finishes_failed", error=str(exc))
                await wait_any(stop, None, _RETRY_S)
                continue
            except Exception:
                # A finish that cannot be admitted must not stop the schedules: it stays in the
                # outbox (nothing is lost) and is retried, loudly.
                log.exception("workflow_finishes_admission_failed")
                await wait_any(stop, None, poll_s)
                continue
            await wait_any(stop, notified, poll_s)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _listen(dsn: str, notified: asyncio.Event, stop: asyncio.Event) -> None:
    def wake(*_: object) -> None:
        notified.set()

    lost = asyncio.Event()
    while not stop.is_set():
        lost.clear()
        try:
            conn = await connect(dsn, "sluice-scheduler-finishes")
        except _TRANSIENT as exc:
            log.warning("workflow_finishes_listen_failed", error=str(exc))
            await wait_any(stop, None, _RETRY_S)
            continue
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(CHANNEL, wake)
            notified.set()  # finishes may have arrived while not listening
            while not stop.is_set() and not conn.is_closed():
                await wait_any(stop, lost, 30.0)
        finally:
            if not conn.is_closed():
                await conn.close()
