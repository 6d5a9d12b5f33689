"""Notifications: the outbox as operators see it (filter by state, incl. `dead`), and a test
send through a rule. Secrets never appear: rules name connections, rows carry no key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from services.api.deps import Conn, Developer, Viewer
from services.api.pagination import Cursor, Limit, decode_id, page_by_id
from services.api.schemas import Page
from shared.db import notifications as notification_repo
from shared.models.common import Record
from shared.models.notifications import NotificationOut, NotificationState, NotifyTestRequest

router = APIRouter(tags=["notifications"])


class NotificationQueued(Record):
    """A test message is queued; the notifier sends it like any other (see its `state`)."""

    id: int


@router.get("/workspaces/{ws}/notifications", response_model=Page[NotificationOut])
async def list_notifications(
    principal: Viewer,
    conn: Conn,
    state: NotificationState | None = None,
    instance: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[NotificationOut]:
    """Newest first; `state=dead` lists the messages given up after the last retry."""
    rows = await notification_repo.list_for(
        conn,
        principal.workspace_id,
        state=state,
        instance_id=instance,
        before_id=decode_id(cursor),
        limit=limit + 1,
    )
    page, nxt = page_by_id(rows, lambda n: n.id, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/notifications/{notification_id}", response_model=NotificationOut)
async def get_notification(
    notification_id: Annotated[int, Path(ge=1, le=2**63 - 1)], principal: Viewer, conn: Conn
) -> NotificationOut:
    return await notification_repo.get(conn, principal.workspace_id, notification_id)


@router.post(
    "/workspaces/{ws}/notifications/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationQueued,
)
async def test_notification(
    body: NotifyTestRequest, principal: Developer, conn: Conn
) -> NotificationQueued:
    """Queue one test message through `rule` (its connections must exist in the workspace)."""
    await notification_repo.check_rule_connections(
        conn, principal.workspace_id, [("rule", body.rule)]
    )
    return NotificationQueued(
        id=await notification_repo.enqueue_test(conn, principal.workspace_id, body.rule)
    )
