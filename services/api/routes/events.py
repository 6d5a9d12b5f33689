"""The event audit trail: why an event did or did not start a run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.api.deps import Conn, Viewer
from services.api.pagination import Cursor, Limit, decode_id, page_by_id
from services.api.schemas import Page
from shared.db import events as event_repo
from shared.db.tokens import Principal
from shared.models.events import EventOut, Outcome

router = APIRouter(tags=["events"])


def is_platform_admin(principal: Principal) -> bool:
    """Admins of `default` run the platform: they alone see events no workspace's trigger
    matched (their payloads may belong to any tenant)."""
    return principal.workspace == "default" and principal.role == "admin"


EventId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/workspaces/{ws}/events", response_model=Page[EventOut])
async def list_events(
    principal: Viewer,
    conn: Conn,
    trigger: Annotated[str | None, Query(description="events with an outcome for it")] = None,
    outcome: Annotated[Outcome | None, Query(description="events with this outcome")] = None,
    since: Annotated[datetime | None, Query(description="received at or after")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[EventOut]:
    """Events newest first, each with its per-trigger (and per-workflow) outcomes."""
    rows = await event_repo.list_for(
        conn,
        principal.workspace_id,
        trigger=trigger,
        outcome=outcome,
        since=since,
        before_id=decode_id(cursor),
        limit=limit + 1,
        platform=is_platform_admin(principal),
    )
    page, nxt = page_by_id(rows, lambda e: e.id, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/events/{event_id}", response_model=EventOut)
async def get_event(event_id: EventId, principal: Viewer, conn: Conn) -> EventOut:
    """One event: its payload, and per trigger the outcome and the instances it created."""
    return await event_repo.get(
        conn, principal.workspace_id, event_id, platform=is_platform_admin(principal)
    )
