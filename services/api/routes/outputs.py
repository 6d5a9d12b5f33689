"""Node outputs in O&M: what each attempt of a node produced and what its descendants see."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from services.api.deps import Conn, Viewer
from services.api.errors import ApiError
from shared.db.errors import NotFound
from shared.db.queries import load
from shared.models.common import Record

Q = load(__file__)
router = APIRouter(tags=["instances"])
InstanceId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class AttemptOutputs(Record):
    attempt: int
    state: str
    finished_at: datetime | None
    outputs: dict[str, Any] | None = Field(description="null: the attempt produced none")


class NodeOutputs(Record):
    instance_id: int
    node: str
    state: str = Field(description="the node's state")
    attempt: int | None = Field(
        description="the attempt whose outputs descendants read: the latest that succeeded"
    )
    outputs: dict[str, Any] | None = Field(
        description="what `${nodes.<node>.outputs...}` reads downstream (null: none yet)"
    )
    attempts: list[AttemptOutputs] = Field(description="every attempt, oldest first")


@router.get(
    "/workspaces/{ws}/instances/{instance_id}/nodes/{node}/outputs", response_model=NodeOutputs
)
async def node_outputs(
    instance_id: InstanceId, node: str, principal: Viewer, conn: Conn
) -> NodeOutputs:
    """A node's outputs: the current ones (its latest succeeded attempt's, which a rerun
    replaces) and those of every attempt, which stay as they were."""
    rows = await conn.fetch(Q["node_outputs"], instance_id, principal.workspace_id, node)
    if not rows:
        exists = await conn.fetchval(Q["instance_exists"], instance_id, principal.workspace_id)
        if exists is None:
            raise NotFound("instance", instance_id)
        raise ApiError(404, f"node {node!r} not found in instance {instance_id}")
    attempts = [
        AttemptOutputs(
            attempt=r["attempt"],
            state=r["state"],
            finished_at=r["finished_at"],
            outputs=r["outputs"],
        )
        for r in rows
        if r["attempt"] is not None
    ]
    current = next((a for a in reversed(attempts) if a.state == "succeeded"), None)
    return NodeOutputs(
        instance_id=instance_id,
        node=node,
        state=rows[0]["node_state"],
        attempt=current.attempt if current else None,
        outputs=(current.outputs or {}) if current else None,
        attempts=attempts,
    )
