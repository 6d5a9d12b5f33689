"""Workflows: versioned specs, publishing, freeze, clone, revert, diff and aggregated status."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import JSONResponse

from services.api import diff
from services.api.deps import Conn, Developer, Operator, Viewer
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, decode_id, page_by_id, page_sorted
from services.api.schemas import (
    CloneRequest,
    LastInstance,
    Page,
    PublishRequest,
    RevertRequest,
    VersionDiff,
    WorkflowDetail,
    WorkflowSaved,
    WorkflowStatus,
)
from shared import backpressure
from shared.db import workflows as workflow_repo
from shared.db.errors import Conflict, NotFound
from shared.db.pool import Connection
from shared.db.queries import load
from shared.db.workflows import SaveResult
from shared.models.instances import InstanceState
from shared.models.workflows import WorkflowOut, WorkflowSpec, WorkflowVersionOut

Q = load(__file__)
router = APIRouter(tags=["workflows"])
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Publish = Annotated[bool, Query(description="also publish the saved version")]
INSTANCE_STATES: tuple[InstanceState, ...] = (
    "waiting",
    "running",
    "succeeded",
    "failed",
    "terminated",
    "cancelled",
)


def _saved(before: WorkflowOut | None, result: SaveResult, publish: bool) -> WorkflowSaved:
    return WorkflowSaved(
        workflow=result.workflow,
        version=result.version,
        created=result.created,
        new_version=before is None or result.version != before.current_version,
        published=publish and (before is None or before.published_version != result.version),
        changed=result.changed,
    )


async def _current(conn: Connection, workspace_id: int, name: str) -> WorkflowOut | None:
    try:
        return await workflow_repo.get(conn, workspace_id, name)
    except NotFound:
        return None


@router.post(
    "/workspaces/{ws}/workflows",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowSaved,
)
async def create_workflow(
    body: WorkflowSpec, principal: Developer, conn: Conn, publish: Publish = False
) -> WorkflowSaved:
    """Create a workflow as version 1; an existing name is a conflict (PUT adds a version)."""
    async with conn.transaction():
        result = await workflow_repo.save(conn, principal.workspace_id, body, publish=publish)
        if not result.created:
            raise Conflict(f"workflow {body.name!r} already exists")
    return _saved(None, result, publish)


@router.get("/workspaces/{ws}/workflows", response_model=Page[WorkflowOut])
async def list_workflows(
    principal: Viewer,
    conn: Conn,
    type: Literal["scheduled", "triggered", "manual"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[WorkflowOut]:
    items = await workflow_repo.list_for(conn, principal.workspace_id, type)
    page, nxt = page_sorted(items, lambda w: w.name, cursor, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/workflows/{name}", response_model=WorkflowDetail)
async def get_workflow(name: str, principal: Viewer, conn: Conn) -> WorkflowDetail:
    """The workflow with the spec of its latest version."""
    wf = await workflow_repo.get(conn, principal.workspace_id, name)
    version = await workflow_repo.get_version(
        conn, principal.workspace_id, name, wf.current_version
    )
    return WorkflowDetail(**wf.model_dump(), spec=version.spec)


@router.put(
    "/workspaces/{ws}/workflows/{name}",
    response_model=WorkflowSaved,
    responses={201: {"model": WorkflowSaved, "description": "created"}},
)
async def put_workflow(
    name: str, body: WorkflowSpec, principal: Developer, conn: Conn, publish: Publish = False
) -> JSONResponse:
    """Save a spec: a new version when it differs from the latest, else nothing changes."""
    if body.name != name:
        raise ApiError(422, f"name: {body.name!r} differs from the path's {name!r}", field="name")
    async with conn.transaction():
        before = await _current(conn, principal.workspace_id, name)
        result = await workflow_repo.save(conn, principal.workspace_id, body, publish=publish)
    saved = _saved(before, result, publish)
    return JSONResponse(saved.model_dump(mode="json"), status_code=201 if result.created else 200)


@router.delete(
    "/workspaces/{ws}/workflows/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_workflow(name: str, principal: Developer, conn: Conn) -> Response:
    """Delete a workflow with its history; 409 while instances are waiting or running."""
    await workflow_repo.delete(conn, principal.workspace_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/workspaces/{ws}/workflows/{name}/versions", response_model=Page[WorkflowVersionOut])
async def list_versions(
    name: str,
    principal: Viewer,
    conn: Conn,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[WorkflowVersionOut]:
    """Versions oldest first; `published` marks the one schedules and triggers use."""
    after = decode_id(cursor) or 0
    rows = [
        v
        for v in await workflow_repo.versions(conn, principal.workspace_id, name)
        if v.version > after
    ]
    page, nxt = page_by_id(rows, lambda v: v.version, limit)
    return Page(items=page, next_cursor=nxt)


@router.get(
    "/workspaces/{ws}/workflows/{name}/versions/{version}", response_model=WorkflowVersionOut
)
async def get_version(
    name: str, version: Version, principal: Viewer, conn: Conn
) -> WorkflowVersionOut:
    return await workflow_repo.get_version(conn, principal.workspace_id, name, version)


@router.get("/workspaces/{ws}/workflows/{name}/versions/{a}/diff/{b}", response_model=VersionDiff)
async def diff_versions(
    name: str, a: Version, b: Version, principal: Viewer, conn: Conn
) -> VersionDiff:
    """What changed from version `a` to version `b`: per-path changes and a unified diff."""
    old = await workflow_repo.get_version(conn, principal.workspace_id, name, a)
    new = await workflow_repo.get_version(conn, principal.workspace_id, name, b)
    return VersionDiff(
        workflow=name,
        from_version=a,
        to_version=b,
        changes=diff.spec_changes(old.spec, new.spec),
        unified=diff.unified(old.spec, new.spec, f"{name}@v{a}", f"{name}@v{b}"),
    )


@router.post("/workspaces/{ws}/workflows/{name}/publish", response_model=WorkflowOut)
async def publish_workflow(
    name: str, principal: Developer, conn: Conn, body: PublishRequest | None = None
) -> WorkflowOut:
    """Publish a version (default: the latest) for schedules and triggers to use."""
    version = body.version if body is not None else None
    return await workflow_repo.publish(conn, principal.workspace_id, name, version)


@router.post("/workspaces/{ws}/workflows/{name}/revert", response_model=WorkflowSaved)
async def revert_workflow(
    name: str, body: RevertRequest, principal: Developer, conn: Conn
) -> WorkflowSaved:
    """Save an earlier version's spec as the newest version, and publish it if asked."""
    async with conn.transaction():
        before = await workflow_repo.get(conn, principal.workspace_id, name)
        result = await workflow_repo.revert(conn, principal.workspace_id, name, body.version)
        if body.publish:
            published = await workflow_repo.publish(
                conn, principal.workspace_id, name, result.version
            )
            result = result.model_copy(update={"workflow": published})
    return _saved(before, result, body.publish)


@router.post(
    "/workspaces/{ws}/workflows/{name}/clone",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowSaved,
)
async def clone_workflow(
    name: str, body: CloneRequest, principal: Developer, conn: Conn
) -> WorkflowSaved:
    """Copy the latest version under a new name, unpublished."""
    result = await workflow_repo.clone(conn, principal.workspace_id, name, body.name)
    return _saved(None, result, False)


@router.post("/workspaces/{ws}/workflows/{name}/freeze", response_model=WorkflowOut)
async def freeze_workflow(name: str, principal: Operator, conn: Conn) -> WorkflowOut:
    """Stop schedules and triggers from starting runs (events are recorded as `frozen`)."""
    return await workflow_repo.set_frozen(conn, principal.workspace_id, name, True)


@router.post("/workspaces/{ws}/workflows/{name}/unfreeze", response_model=WorkflowOut)
async def unfreeze_workflow(name: str, principal: Operator, conn: Conn) -> WorkflowOut:
    return await workflow_repo.set_frozen(conn, principal.workspace_id, name, False)


@router.get("/workspaces/{ws}/workflows/{name}/status", response_model=WorkflowStatus)
async def workflow_status(name: str, principal: Viewer, conn: Conn) -> WorkflowStatus:
    """Instances per state (waiting = queuing), ready/running nodes, latest outcomes."""
    wf = await workflow_repo.get(conn, principal.workspace_id, name)
    row = await conn.fetchrow(Q["workflow_status"], wf.id)
    assert row is not None
    last = await conn.fetchrow(Q["last_instance"], wf.id)
    counts = {state: int(row["instances"].get(state, 0)) for state in INSTANCE_STATES}
    nodes = {state: int(row["nodes"].get(state, 0)) for state in ("ready", "running")}
    return WorkflowStatus(
        workflow=wf.name,
        frozen=wf.frozen,
        current_version=wf.current_version,
        published_version=wf.published_version,
        instances=counts,
        nodes=nodes,
        last_instance=LastInstance(**dict(last)) if last is not None else None,
        last_succeeded_at=row["last_succeeded_at"],
        last_failed_at=row["last_failed_at"],
        backpressure=await backpressure.of_workflow(conn, wf.id),
    )
