"""Terminating and rerunning an instance: unfinished work ends, or ended work starts over.

Both lock the instance row first, like every transition of an instance's nodes (see the
executor's `finish_attempts`), so a finish racing a terminate sees it before deciding anything.
"""

from __future__ import annotations

from shared.db.channels import INSTANCES_CHANNEL, NODES_CHANNEL, TERMINATE_CHANNEL
from shared.db.errors import Conflict, Invalid, NotFound
from shared.db.notifications import enqueue_instance_events, enqueue_node_events
from shared.db.pool import Connection
from shared.db.queries import load
from shared.models.instances import FINAL_INSTANCE_STATES

Q = load(__file__)


async def terminate_instance(conn: Connection, ws_id: int, instance_id: int) -> None:
    """Terminate an instance: unfinished nodes and running attempts become `terminated`.

    Executors running its attempts learn of it through NOTIFY `sluice_terminate` (their lease
    renewal is the fallback) and kill the process groups. Raises NotFound when the instance is
    not in this workspace, Conflict when it has already ended.
    """
    async with conn.transaction():
        row = await conn.fetchrow(Q["lock_instance"], instance_id, ws_id)
        if row is None:
            raise NotFound("instance", instance_id)
        if row["state"] in FINAL_INSTANCE_STATES:
            raise Conflict(f"instance {instance_id} has already ended ({row['state']})")
        nodes = await conn.fetch(Q["terminate_nodes"], instance_id)
        await conn.fetch(Q["terminate_attempts"], instance_id)
        await conn.fetch(Q["terminate_instance"], instance_id, "terminated by request")
        await enqueue_node_events(conn, [(int(r["id"]), "terminated", None) for r in nodes])
        await enqueue_instance_events(conn, [(instance_id, "terminated")])
        await conn.execute(Q["notify"], TERMINATE_CHANNEL, str(instance_id))
        await conn.execute(Q["notify"], INSTANCES_CHANNEL, "")
        await conn.execute(Q["notify"], NODES_CHANNEL, "")


async def rerun_instance(conn: Connection, ws_id: int, instance_id: int, mode: str) -> int:
    """Run an ended instance again, in place; returns its id.

    `all` gives every node a new attempt; `failed` only the failed, upstream_failed and
    terminated nodes (succeeded nodes keep their result). Earlier attempts and their logs stay.
    The instance goes back to `waiting` and is admitted under the workflow's limits like any
    other. Raises NotFound, Conflict (still active, or nothing to rerun), Invalid (bad mode).
    """
    if mode not in ("all", "failed"):
        raise Invalid("mode", f"must be 'all' or 'failed', got {mode!r}")
    async with conn.transaction():
        row = await conn.fetchrow(Q["lock_instance"], instance_id, ws_id)
        if row is None:
            raise NotFound("instance", instance_id)
        if row["state"] not in FINAL_INSTANCE_STATES:
            raise Conflict(f"instance {instance_id} is still {row['state']}")
        reset = await conn.fetch(Q["reset_nodes"], instance_id, mode)
        if not reset:
            raise Conflict(f"instance {instance_id} has no failed nodes to rerun")
        await conn.fetch(Q["requeue_instance"], instance_id, f"rerun ({mode})")
        await conn.execute(Q["notify"], INSTANCES_CHANNEL, "")
    return instance_id
