"""Instance and node state changes after creation (contract 4: only the executor makes them).

- `promote_instances`: waiting -> running under `max_parallel_instances` and backfill parallelism,
  then the nodes whose upstream all succeeded become ready.
- `finish_attempts`: the end of attempts (fenced by lease token), retries, DAG readiness,
  `upstream_failed` propagation, instance completion, in one transaction per batch.

Every transition of an instance's nodes first locks the instance row, so concurrent finishes of
two upstream nodes see each other before deciding whether their successor is ready. Channels:
`shared.db.channels`. Terminate and rerun are in `shared.operations.instances`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from services.executor.claims import ADMISSION_LOCK
from services.executor.logs import LogChunk, write_chunks
from shared.db.channels import INSTANCES_CHANNEL, NODES_CHANNEL
from shared.db.notifications import enqueue_instance_events, enqueue_node_events
from shared.db.pool import Connection
from shared.db.queries import load
from shared.models.notifications import finish_events

Q = load(__file__)

Row = Mapping[str, Any]
FinishOutcome = Literal["succeeded", "failed", "lost", "released"]


@dataclass(frozen=True)
class Finish:
    """The end of one attempt, fenced by the lease token it was claimed with."""

    node_id: int
    lease_token: UUID
    attempt_id: int
    outcome: FinishOutcome
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class FinishResult:
    """What a finish batch did: which attempts it accepted and what follows from them."""

    accepted: set[int] = field(default_factory=set)
    # attempt ids whose log chunks were stored (the others no longer hold their lease)
    logged: set[int] = field(default_factory=set)
    # node id -> when its retry may start (nodes re-queued with a delay)
    retry_at: dict[int, datetime] = field(default_factory=dict)
    completed: dict[int, str] = field(default_factory=dict)
    # an instance ended whose workflow has waiting instances
    admission_due: bool = False


def _instance_event(row: Row) -> tuple[int, str]:
    return int(row["id"]), "success" if row["state"] == "succeeded" else "failure"


async def promote_instances(conn: Connection, batch: int = 1000) -> list[int]:
    """Start waiting instances where limits allow; return the ids that became running."""
    async with conn.transaction():
        await conn.execute(Q["lock_admission"], ADMISSION_LOCK)
        ids = [int(r["id"]) for r in await conn.fetch(Q["promote_instances"], batch)]
        if ids:
            await conn.fetch(Q["release_ready"], ids)
            # An instance with nothing left to run (e.g. every node skipped) ends right away.
            ended = await conn.fetch(Q["complete_instances"], ids)
            # Notifications are written in the transaction of the change (outbox).
            await enqueue_instance_events(
                conn, [(i, "start") for i in ids] + [_instance_event(r) for r in ended]
            )
            await conn.execute(Q["notify"], NODES_CHANNEL, "")
    return ids


async def finish_attempts(
    conn: Connection,
    finishes: list[Finish],
    chunks: list[LogChunk] | None = None,
    *,
    only_expired: bool = False,
) -> FinishResult:
    """End attempts and store their last log chunks in one transaction.

    An attempt whose lease token no longer matches (swept, terminated, re-run) is not accepted:
    nothing of it is written. `only_expired` (the sweeper) accepts only leases already expired
    on the database clock, so an executor that renewed in the meantime keeps its attempt.
    """
    chunks = chunks or []
    if not finishes:
        return FinishResult(logged=await write_chunks(conn, chunks))
    async with conn.transaction():
        await conn.fetch(Q["lock_instances_of_nodes"], [f.node_id for f in finishes])
        logged = await write_chunks(conn, chunks)
        rows = await conn.fetch(
            Q["finish_attempts"],
            [f.node_id for f in finishes],
            [f.lease_token for f in finishes],
            [f.attempt_id for f in finishes],
            [f.outcome for f in finishes],
            [f.exit_code for f in finishes],
            [f.reason for f in finishes],
            only_expired,
        )
        if not rows:
            return FinishResult(logged=logged)
        instance_ids = sorted({int(r["instance_id"]) for r in rows})
        states = {r["state"] for r in rows}
        if "succeeded" in states:
            await conn.fetch(Q["release_ready"], instance_ids)
        if "failed" in states:
            await conn.fetch(Q["mark_upstream_failed"], instance_ids)
        ended = await conn.fetch(Q["complete_instances"], instance_ids)
        completed = {int(r["id"]): str(r["state"]) for r in ended}
        await enqueue_node_events(
            conn,
            [
                (int(r["node_id"]), event, r["reason"])
                for r in rows
                for event in finish_events(r["state"], r["outcome"], r["reason"])
            ],
        )
        await enqueue_instance_events(conn, [_instance_event(r) for r in ended])
        admission_due = any(r["queued"] for r in ended)
        await conn.execute(Q["notify"], NODES_CHANNEL, "")
        if admission_due:
            await conn.execute(Q["notify"], INSTANCES_CHANNEL, "")
    return FinishResult(
        accepted={int(r["attempt_id"]) for r in rows},
        logged=logged,
        retry_at={int(r["node_id"]): r["not_before"] for r in rows if r["not_before"] is not None},
        completed=completed,
        admission_due=admission_due,
    )
