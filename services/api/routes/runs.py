"""Runs requested through the API, and backfills."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status

from services.api.deps import Conn, Operator
from services.api.idempotency import IdempotencyKey, answer_once, fingerprint
from services.api.schemas import RunAccepted, RunBody
from shared.db import workflows as workflow_repo
from shared.intake import request_run
from shared.models.backfills import (
    BackfillGroupOut,
    BackfillOut,
    BackfillRequest,
    GroupBackfillRequest,
)
from shared.operations.backfills import create_backfill, create_backfills

router = APIRouter(tags=["runs"])


@router.post(
    "/workspaces/{ws}/workflows/{name}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
)
async def run_workflow(
    name: str,
    body: RunBody,
    principal: Operator,
    conn: Conn,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RunAccepted:
    """Queue one instance. The published version runs unless `version` or `draft` says
    otherwise; `trigger_message` is what the nodes see as `${workflow.triggerMessage}`.
    With an `Idempotency-Key` used before, the first answer comes back and nothing is queued."""

    async def create() -> RunAccepted:
        if body.version is not None:
            # Checked here so a missing version is reported by its number, not an internal key.
            await workflow_repo.get_version(conn, principal.workspace_id, name, body.version)
        created = await request_run(
            conn, principal.workspace_id, name, body, kind=body.kind, now=datetime.now(UTC)
        )
        return RunAccepted(instance_id=created.id, state=created.state, replaced=created.replaced)

    return await answer_once(
        conn,
        principal.workspace_id,
        idempotency_key,
        fingerprint("runs", name, body),
        response,
        RunAccepted,
        create,
    )


@router.post(
    "/workspaces/{ws}/workflows/{name}/backfill",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackfillOut,
)
async def backfill_workflow(
    name: str,
    body: BackfillRequest,
    principal: Operator,
    conn: Conn,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BackfillOut:
    """Create `backfill` instances for every fire time in [start, end], run as one group.
    With an `Idempotency-Key` used before, the first answer comes back and nothing is created."""

    async def create() -> BackfillOut:
        out: BackfillOut = await create_backfill(
            conn, principal.workspace_id, name, body, now=datetime.now(UTC)
        )
        return out

    return await answer_once(
        conn,
        principal.workspace_id,
        idempotency_key,
        fingerprint("backfill", name, body),
        response,
        BackfillOut,
        create,
    )


@router.post(
    "/workspaces/{ws}/backfills",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackfillGroupOut,
)
async def backfill_workflows(
    body: GroupBackfillRequest,
    principal: Operator,
    conn: Conn,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BackfillGroupOut:
    """Backfill several workflows together over [start, end]: one backfill per workflow,
    created upstream first; a dependant's instance for a day waits for the group's own upstream
    instance of that day (dependencies between workflows)."""

    async def create() -> BackfillGroupOut:
        made: list[BackfillOut] = await create_backfills(
            conn, principal.workspace_id, body.workflows, body, now=datetime.now(UTC)
        )
        return BackfillGroupOut(group_id=made[0].id, backfills=made)

    return await answer_once(
        conn,
        principal.workspace_id,
        idempotency_key,
        fingerprint("backfills", ",".join(body.workflows), body),
        response,
        BackfillGroupOut,
        create,
    )
