"""Triggers: Kafka and S3 event matchers, defined apart from the workflows bound to them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from fastapi.responses import JSONResponse

from services.api.deps import Conn, Developer, Viewer
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, page_sorted
from services.api.schemas import Page, TriggerSaved
from shared.db import triggers as trigger_repo
from shared.db.errors import Conflict, NotFound
from shared.models.triggers import AnyTriggerSpec, TriggerOut, TriggerSpec

router = APIRouter(tags=["triggers"])
TriggerBody = Annotated[TriggerSpec, Body()]


def _spec_json(spec: AnyTriggerSpec) -> dict[str, object]:
    return spec.model_dump(mode="json", exclude_none=False)


@router.post(
    "/workspaces/{ws}/triggers", status_code=status.HTTP_201_CREATED, response_model=TriggerOut
)
async def create_trigger(body: TriggerBody, principal: Developer, conn: Conn) -> TriggerOut:
    """Create a trigger; an existing name is a conflict (PUT updates)."""
    async with conn.transaction():
        out, created = await trigger_repo.upsert(
            conn, principal.workspace, principal.workspace_id, body
        )
        if not created:
            raise Conflict(f"trigger {body.name!r} already exists")
    return out


@router.get("/workspaces/{ws}/triggers", response_model=Page[TriggerOut])
async def list_triggers(
    principal: Viewer, conn: Conn, limit: Limit = 50, cursor: Cursor = None
) -> Page[TriggerOut]:
    items = await trigger_repo.list_for(conn, principal.workspace_id)
    page, nxt = page_sorted(items, lambda t: t.name, cursor, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/triggers/{name}", response_model=TriggerOut)
async def get_trigger(name: str, principal: Viewer, conn: Conn) -> TriggerOut:
    return await trigger_repo.get(conn, principal.workspace_id, name)


@router.put(
    "/workspaces/{ws}/triggers/{name}",
    response_model=TriggerSaved,
    responses={201: {"model": TriggerSaved, "description": "created"}},
)
async def put_trigger(
    name: str, body: TriggerBody, principal: Developer, conn: Conn
) -> JSONResponse:
    """Create or update a trigger; `changed` says whether the stored spec differed."""
    if body.name != name:
        raise ApiError(422, f"name: {body.name!r} differs from the path's {name!r}", field="name")
    async with conn.transaction():
        try:
            before = await trigger_repo.get(conn, principal.workspace_id, name)
        except NotFound:
            before = None
        out, created = await trigger_repo.upsert(
            conn, principal.workspace, principal.workspace_id, body
        )
    changed = before is None or before.spec != _spec_json(body)
    saved = TriggerSaved(trigger=out, created=created, changed=changed)
    return JSONResponse(saved.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete(
    "/workspaces/{ws}/triggers/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_trigger(name: str, principal: Developer, conn: Conn) -> Response:
    """Delete a trigger no workflow is bound to (409 names the workflows otherwise)."""
    await trigger_repo.delete(conn, principal.workspace_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
