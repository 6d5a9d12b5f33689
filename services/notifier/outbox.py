"""The notifier's side of the outbox: claim under a lease, read what a message says, mark the
outcome (fenced by the lease token)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.common import Record

Q = load(__file__)


class Claimed(Record):
    """An outbox row this notifier holds the lease of."""

    id: int
    workspace_id: int
    instance_id: int | None
    node: str | None
    event: str
    channel: str
    rule: dict[str, Any]
    message_id: str
    detail: dict[str, Any]
    attempts: int
    lease_token: UUID
    created_at: datetime


async def claim(conn: Executor, *, lease_s: float, batch: int) -> list[Claimed]:
    rows = await conn.fetch(Q["claim"], float(lease_s), batch)
    return [Claimed(**dict(r)) for r in rows]


async def mark_sent(conn: Executor, row: Claimed) -> float | None:
    """Record delivery; returns seconds from the state change to now (None: lease lost)."""
    value = await conn.fetchval(Q["mark_sent"], row.id, row.lease_token)
    return None if value is None else float(value)


async def mark_failed(
    conn: Executor, row: Claimed, error: str, *, retry_in_s: float, give_up: bool, max_attempts: int
) -> str | None:
    """Schedule another try or mark dead; returns the new state (None: lease lost)."""
    state = await conn.fetchval(
        Q["mark_failed"], row.id, row.lease_token, give_up, float(retry_in_s), max_attempts, error
    )
    return None if state is None else str(state)


async def next_due_s(conn: Executor) -> float | None:
    value = await conn.fetchval(Q["next_due"])
    return None if value is None else float(value)


class MessageFacts(Record):
    """What a message says about the change, as stored: the instance, and the node (the event's
    node, else for an instance event the node that failed first) with its attempt."""

    workspace: str
    workflow: str
    version: int
    state: str
    reason: str | None
    instance_created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parameters: dict[str, Any] | None
    bizdate: str | None
    cyctime: str | None
    node: str | None
    node_state: str | None
    attempt: int | None
    attempt_reason: str | None
    exit_code: int | None
    attempt_started_at: datetime | None
    attempt_finished_at: datetime | None
    attempt_parameters: dict[str, Any] | None
    # The end of the attempt's log (its last chunks), None without an attempt.
    log_tail: str | None


async def message_facts(
    conn: Executor, instance_id: int, node: str | None, attempt: int | None, failed: bool
) -> MessageFacts | None:
    """None when the instance no longer exists."""
    row = await conn.fetchrow(Q["message_context"], instance_id, node, attempt, failed)
    return None if row is None else MessageFacts(**dict(row))


async def workspace_name(conn: Executor, workspace_id: int) -> str:
    return str(await conn.fetchval(Q["workspace_name"], workspace_id))


async def prune(conn: Executor, *, retention_days: int, batch: int = 10_000) -> int:
    """Delete sent and dead rows older than the retention; returns how many went."""
    return len(await conn.fetch(Q["prune"], retention_days, batch))
