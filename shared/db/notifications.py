"""The notification outbox: rows written in the transaction of the state change that raises
them (contract: an alert is never lost because a process died), read by the API.

The notifier (services/notifier) delivers them; it and the executor meet only in this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from shared.db.errors import Invalid, NotFound
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.notifications import NotificationOut, NotificationState, NotifyRule
from shared.models.workflows import WorkflowSpec

Q = load(__file__)
CHANNEL = "sluice_notifications"


async def enqueue_instance_events(conn: Connection, events: Sequence[tuple[int, str]]) -> int:
    """Queue the messages for (instance id, event) pairs; returns how many rows were new."""
    if not events:
        return 0
    rows = await conn.fetch(
        Q["enqueue_instance_events"], [e[0] for e in events], [e[1] for e in events]
    )
    if rows:
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return len(rows)


async def enqueue_node_events(
    conn: Connection, events: Sequence[tuple[int, str, str | None]]
) -> int:
    """Queue the messages for (node id, event, reason) triples; returns how many were new."""
    if not events:
        return 0
    rows = await conn.fetch(
        Q["enqueue_node_events"],
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
    )
    if rows:
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return len(rows)


async def enqueue_sla_misses(conn: Connection, batch: int = 1000) -> int:
    """Raise `sla_miss` for instances unfinished past their workflow's `sla_s`, once each."""
    async with conn.transaction():
        ids = list(await conn.fetchval(Q["enqueue_sla_misses"], batch))
        return await enqueue_instance_events(conn, [(i, "sla_miss") for i in ids])


async def enqueue_test(conn: Connection, workspace_id: int, rule: NotifyRule) -> int:
    """Queue one test message through `rule`; the notifier sends it like any other."""
    async with conn.transaction():
        row_id = await conn.fetchval(
            Q["insert_test"], workspace_id, rule.model_dump(mode="json", exclude_none=True)
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return int(row_id)


def _rules(spec: WorkflowSpec) -> Iterable[tuple[str, NotifyRule]]:
    for index, rule in enumerate(spec.policy.notify):
        yield f"policy.notify.{index}", rule
    for n, node in enumerate(spec.nodes):
        for index, rule in enumerate(node.notify):
            yield f"nodes.{n}.notify.{index}", rule


async def check_rule_connections(
    conn: Executor, workspace_id: int, rules: Iterable[tuple[str, NotifyRule]]
) -> None:
    """Every connection a rule names must exist in the workspace with the right kind."""
    wanted: list[tuple[str, str, str]] = []
    for where, rule in rules:
        if rule.connection is not None:
            wanted.append((f"{where}.connection", rule.connection, "smtp"))
        if rule.secret is not None:
            wanted.append((f"{where}.secret", rule.secret, "secret"))
    if not wanted:
        return
    rows = await conn.fetch(Q["connection_kinds"], workspace_id, [w[1] for w in wanted])
    kinds = {str(r["name"]): str(r["kind"]) for r in rows}
    for field, name, kind in wanted:
        if name not in kinds:
            raise Invalid(field, f"connection {name!r} does not exist in this workspace")
        if kinds[name] != kind:
            raise Invalid(field, f"connection {name!r} is of kind {kinds[name]}, not {kind}")


async def check_spec_connections(conn: Executor, workspace_id: int, spec: WorkflowSpec) -> None:
    """Validate the connections named by a workflow's notification rules (422 naming the field)."""
    await check_rule_connections(conn, workspace_id, _rules(spec))


async def list_for(
    conn: Executor,
    workspace_id: int,
    *,
    state: NotificationState | None = None,
    instance_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[NotificationOut]:
    """Newest first; `before_id` pages back."""
    rows = await conn.fetch(
        Q["list_notifications"], workspace_id, state, instance_id, before_id, limit
    )
    return [NotificationOut(**dict(r)) for r in rows]


async def get(conn: Executor, workspace_id: int, notification_id: int) -> NotificationOut:
    row: Any = await conn.fetchrow(Q["get_notification"], workspace_id, notification_id)
    if row is None:
        raise NotFound("notification", notification_id)
    return NotificationOut(**dict(row))
