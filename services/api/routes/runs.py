"""Runs requested through the API, and backfills (delegated to the scheduler package)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from services.api import optional
from services.api.deps import Conn, Operator
from services.api.schemas import ErrorBody, RunAccepted, RunBody
from shared.db import workflows as workflow_repo
from shared.intake import request_run
from shared.models.backfills import BackfillOut, BackfillRequest

router = APIRouter(tags=["runs"])


@router.post(
    "/workspaces/{ws}/workflows/{name}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
)
async def run_workflow(name: str, body: RunBody, principal: Operator, conn: Conn) -> RunAccepted:
    """Queue one instance. The published version runs unless `version` or `draft` says
    otherwise; `trigger_message` is what the nodes see as `${workflow.triggerMessage}`."""
    if body.version is not None:
        # Checked here so a missing version is reported by its number, not an internal key.
        await workflow_repo.get_version(conn, principal.workspace_id, name, body.version)
    created = await request_run(
        conn, principal.workspace_id, name, body, kind=body.kind, now=datetime.now(UTC)
    )
    return RunAccepted(instance_id=created.id, state=created.state, replaced=created.replaced)


@router.post(
    "/workspaces/{ws}/workflows/{name}/backfill",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackfillOut,
    responses={501: {"model": ErrorBody, "description": "the scheduler package is not installed"}},
)
async def backfill_workflow(
    name: str, body: BackfillRequest, principal: Operator, conn: Conn
) -> BackfillOut:
    """Create `backfill` instances for every fire time in [start, end], run as one group."""
    create = optional.function("services.scheduler.backfill", "create_backfill", "backfill")
    out: BackfillOut = await create(conn, principal.workspace_id, name, body, now=datetime.now(UTC))
    return out
