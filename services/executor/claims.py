"""Claiming ready nodes in dispatch order under resource-group slots and executor concurrency.

Dispatch order: effective priority DESC, weight DESC, instance created_at ASC, node id
ASC, per resource group; across groups the same order decides which claims this executor takes.
Contract 5: claims of one resource group are serialized by a transaction-scoped advisory lock of
that group and the claiming statement counts running nodes with a snapshot taken after those
locks, so however many replicas claim, a group never runs more nodes than its slots; claims of
different groups run side by side. `FOR UPDATE SKIP LOCKED` keeps a claim from waiting
on rows a terminate or rerun is changing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from shared.db.notifications import enqueue_node_events
from shared.db.pool import Connection
from shared.db.queries import load
from shared.models.common import Record
from shared.params.resolution import WorkflowType

Q = load(__file__)
# Arbitrary constants naming the executor's advisory locks ("sluice" + purpose); claim locks
# are (class, hash of the resource group's name).
CLAIM_LOCK_CLASS = 0x736C_0001
ADMISSION_LOCK = 0x736C_7569_6365_0002


class ClaimedNode(Record):
    """A node attempt this executor now holds the lease of, with what running it needs."""

    node_id: int
    attempt_id: int
    name: str
    type: str
    attempt: int
    lease_token: UUID
    timeout_s: float | None
    resource_group: str
    is_root: bool
    ready_at: datetime | None
    claimed_at: datetime
    instance_id: int
    workspace_id: int
    workflow_id: int
    workflow: str
    workflow_type: WorkflowType
    version: int
    kind: str
    cyctime: datetime
    bizdate: date | None
    parameters: dict[str, Any]
    trigger_message: Any
    event_received_at: datetime | None
    workspace_parameters: dict[str, Any] = Field(default_factory=dict)


async def claim_nodes(
    conn: Connection,
    executor_id: str,
    *,
    lease_s: float,
    free: int,
    concurrency: int,
    batch: int,
) -> list[ClaimedNode]:
    """Claim up to `min(free, batch)` ready nodes; each gets a new attempt and a fresh lease.

    `free` is what this process can start now; `concurrency` is checked again in SQL against the
    nodes the database says this executor runs.
    """
    claimed, _ = await claim_nodes_detail(
        conn, executor_id, lease_s=lease_s, free=free, concurrency=concurrency, batch=batch
    )
    return claimed


async def claim_nodes_detail(
    conn: Connection,
    executor_id: str,
    *,
    lease_s: float,
    free: int,
    concurrency: int,
    batch: int,
) -> tuple[list[ClaimedNode], bool]:
    """`claim_nodes`, and whether a group was skipped because another replica was claiming
    from it (its ready nodes may still be there: worth another claim soon)."""
    if free <= 0:
        return [], False
    async with conn.transaction():
        tried = await conn.fetch(Q["lock_claims"], CLAIM_LOCK_CLASS)
        groups = [str(r["name"]) for r in tried if r["locked"]]
        skipped = len(groups) < len(tried)
        if not groups and tried:
            first = str(tried[0]["name"])
            await conn.execute(Q["wait_claim_lock"], CLAIM_LOCK_CLASS, first)
            groups = [first]
        if not groups:
            return [], False
        rows = await conn.fetch(
            Q["claim_nodes"], executor_id, float(lease_s), free, concurrency, batch, groups
        )
        await enqueue_node_events(conn, [(int(r["node_id"]), "start", None) for r in rows])
    return [ClaimedNode(**dict(r)) for r in rows], skipped


async def unknown_groups(conn: Connection) -> list[str]:
    """Resource groups that ready nodes name but that do not exist."""
    return [str(r["name"]) for r in await conn.fetch(Q["unknown_groups"])]


async def load_specs(
    conn: Connection, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], dict[str, Any]]:
    """Raw specs of workflow versions by (workflow_id, version); versions are immutable."""
    if not keys:
        return {}
    rows = await conn.fetch(Q["version_specs"], [k[0] for k in keys], [k[1] for k in keys])
    return {(int(r["workflow_id"]), int(r["version"])): r["spec"] for r in rows}
