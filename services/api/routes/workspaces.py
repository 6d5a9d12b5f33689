"""Workspaces: created by an admin of `default`, each born with its own admin token."""

from __future__ import annotations

from fastapi import APIRouter, status

from services.api.deps import Admin, Authenticated, Conn, Viewer
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, page_sorted
from services.api.schemas import (
    Page,
    TokenCreated,
    WorkspaceCreate,
    WorkspaceCreated,
    WorkspaceParameters,
)
from shared.db import tokens as token_repo
from shared.db import workspaces as workspace_repo
from shared.db.workspaces import WorkspaceOut

router = APIRouter(tags=["workspaces"])
ROOT_WORKSPACE = "default"


@router.post("/workspaces", status_code=status.HTTP_201_CREATED, response_model=WorkspaceCreated)
async def create_workspace(
    body: WorkspaceCreate, principal: Authenticated, conn: Conn
) -> WorkspaceCreated:
    """Create a workspace and its first admin token (admin of `default` only)."""
    if principal.workspace != ROOT_WORKSPACE or principal.role != "admin":
        raise ApiError(403, "only an admin token of workspace 'default' may create workspaces")
    async with conn.transaction():
        ws = await workspace_repo.create(conn, body.name, body.parameters)
        token, secret = await token_repo.create(conn, ws.id, "admin", "admin")
    return WorkspaceCreated(workspace=ws, token=TokenCreated(**token.model_dump(), secret=secret))


@router.get("/workspaces", response_model=Page[WorkspaceOut])
async def list_workspaces(
    principal: Authenticated, conn: Conn, limit: Limit = 50, cursor: Cursor = None
) -> Page[WorkspaceOut]:
    """Every workspace for an admin of `default`; the token's own workspace for anyone else."""
    if principal.workspace == ROOT_WORKSPACE and principal.role == "admin":
        items = await workspace_repo.list_all(conn)
    else:
        items = [await workspace_repo.get(conn, principal.workspace)]
    page, nxt = page_sorted(items, lambda w: w.name, cursor, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}", response_model=WorkspaceOut)
async def get_workspace(ws: str, principal: Viewer, conn: Conn) -> WorkspaceOut:
    return await workspace_repo.get(conn, ws)


@router.put("/workspaces/{ws}", response_model=WorkspaceOut)
async def set_workspace_parameters(
    ws: str, body: WorkspaceParameters, principal: Admin, conn: Conn
) -> WorkspaceOut:
    """Replace the workspace parameters (the lowest-precedence parameter source)."""
    return await workspace_repo.set_parameters(conn, ws, body.parameters)
