"""Connections: named credentials. `secrets` is accepted on write and never returned."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse

from services.api.deps import Admin, Conn, Viewer, get_settings
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, page_sorted
from services.api.schemas import ConnectionSaved, Page
from shared.db import connections as connection_repo
from shared.db.connections import ConnectionOut, ConnectionSpec
from shared.db.errors import Conflict
from shared.settings import Settings

router = APIRouter(tags=["connections"])
SettingsDep = Annotated[Settings, Depends(get_settings)]


@router.post(
    "/workspaces/{ws}/connections",
    status_code=status.HTTP_201_CREATED,
    response_model=ConnectionOut,
)
async def create_connection(
    body: ConnectionSpec, principal: Admin, conn: Conn, settings: SettingsDep
) -> ConnectionOut:
    """Create a connection; an existing name is a conflict (PUT replaces)."""
    async with conn.transaction():
        out, created = await connection_repo.upsert(
            conn, principal.workspace_id, body, settings.secret_box()
        )
        if not created:
            # Raising rolls the upsert back: the stored connection is untouched.
            raise Conflict(f"connection {body.name!r} already exists")
    return out


@router.get("/workspaces/{ws}/connections", response_model=Page[ConnectionOut])
async def list_connections(
    principal: Viewer, conn: Conn, limit: Limit = 50, cursor: Cursor = None
) -> Page[ConnectionOut]:
    items = await connection_repo.list_for(conn, principal.workspace_id)
    page, nxt = page_sorted(items, lambda c: c.name, cursor, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/connections/{name}", response_model=ConnectionOut)
async def get_connection(name: str, principal: Viewer, conn: Conn) -> ConnectionOut:
    return await connection_repo.get(conn, principal.workspace_id, name)


@router.put(
    "/workspaces/{ws}/connections/{name}",
    response_model=ConnectionSaved,
    responses={201: {"model": ConnectionSaved, "description": "created"}},
)
async def put_connection(
    name: str, body: ConnectionSpec, principal: Admin, conn: Conn, settings: SettingsDep
) -> JSONResponse:
    """Create or replace; leaving out `secrets` keeps the stored ones."""
    if body.name != name:
        raise ApiError(422, f"name: {body.name!r} differs from the path's {name!r}", field="name")
    out, created = await connection_repo.upsert(
        conn, principal.workspace_id, body, settings.secret_box()
    )
    saved = ConnectionSaved(connection=out, created=created)
    return JSONResponse(saved.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete(
    "/workspaces/{ws}/connections/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_connection(name: str, principal: Admin, conn: Conn) -> Response:
    await connection_repo.delete(conn, principal.workspace_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
