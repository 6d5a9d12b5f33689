"""Event replay: re-read what a Kafka topic or an S3 bucket held in a range, for one trigger.

The API only queues the job (PostgreSQL is all it talks to); the listener that owns the source
carries it out (`shared.replays`) and records its progress on the job row, which
`GET .../replays/{id}` shows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, status

from services.api.deps import Conn, Operator, Viewer, get_settings
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, decode_id, page_by_id
from services.api.schemas import Page
from shared.db import replays as replay_repo
from shared.db import triggers as trigger_repo
from shared.models.replays import ReplayAccepted, ReplayOut, ReplayRequest
from shared.settings import Settings

router = APIRouter(tags=["replays"])
ReplayId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/workspaces/{ws}/triggers/{name}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplayAccepted,
)
async def request_replay(
    name: str,
    body: Annotated[ReplayRequest, Body()],
    principal: Operator,
    conn: Conn,
    settings: Annotated[Settings, Depends(get_settings)],
) -> ReplayAccepted:
    """Queue a replay of a Kafka or S3 trigger; `GET .../replays/{replay_id}` follows it.

    `mode: missing` admits only records that were never admitted for the trigger (through its
    dedup key); `mode: all` runs every record of the range again as a `replay` instance linked to
    the event that first admitted it.
    """
    trigger = await trigger_repo.get(conn, principal.workspace_id, name)
    if trigger.type not in ("kafka", "s3"):
        raise ApiError(
            422,
            f"name: trigger {name!r} is of type {trigger.type!r}; only kafka and s3 triggers "
            "read a source that can be replayed",
            field="name",
        )
    limit = settings.replay_max_events
    max_events = body.max_events if body.max_events is not None else limit
    if max_events > limit:
        raise ApiError(
            422,
            f"max_events: {max_events} is over the limit of {limit} (SLUICE_REPLAY_MAX_EVENTS)",
            field="max_events",
        )
    if trigger.type == "s3" and body.by_offsets:
        raise ApiError(
            422,
            "from: S3 triggers are replayed by time; {partition: offset} maps are for Kafka",
            field="from",
        )
    span = body.offset_count()
    if span > max_events:
        raise ApiError(
            422,
            f"to: the offsets span {span} records, over max_events {max_events}; narrow the range",
            field="to",
        )
    return await replay_repo.create(
        conn, principal.workspace_id, trigger.id, trigger.name, trigger.type, body, max_events
    )


@router.get("/workspaces/{ws}/replays", response_model=Page[ReplayOut])
async def list_replays(
    principal: Viewer,
    conn: Conn,
    trigger: Annotated[str | None, Query(description="replays of this trigger")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReplayOut]:
    """Replays newest first, with their state and counts."""
    rows = await replay_repo.list_for(
        conn,
        principal.workspace_id,
        trigger=trigger,
        before_id=decode_id(cursor),
        limit=limit + 1,
    )
    page, nxt = page_by_id(rows, lambda r: r.id, limit)
    return Page(items=page, next_cursor=nxt)


@router.get("/workspaces/{ws}/replays/{replay_id}", response_model=ReplayOut)
async def get_replay(replay_id: ReplayId, principal: Viewer, conn: Conn) -> ReplayOut:
    """A replay's state, counts (read, admitted, duplicate, filtered, other) and error."""
    return await replay_repo.get(conn, principal.workspace_id, replay_id)
