"""O&M on instances: list and filter, detail with nodes and attempts, logs, rerun, terminate.

Attempt state belongs to the executor (contract 4), so rerun and terminate are requests: the API
checks that the instance is the caller's to touch and in a state that allows it, records the
request (`shared.operations.requests`) and an executor carries it out. Logs are read with
`shared.operations.logs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from services.api.deps import Conn, Operator, Viewer, get_pool
from services.api.errors import ApiError
from services.api.pagination import Cursor, Limit, decode_id, page_by_id
from services.api.schemas import (
    InstanceDetail,
    InstanceSummary,
    Page,
    RerunRequest,
    error_responses,
)
from shared.db import instances as instance_repo
from shared.db.errors import NotFound
from shared.db.pool import Connection
from shared.db.queries import load
from shared.models.instances import (
    FINAL_INSTANCE_STATES,
    FINAL_NODE_STATES,
    InstanceKind,
    InstanceRequestOut,
    InstanceState,
)
from shared.operations import requests as instance_requests
from shared.operations.logs import read_log

Q = load(__file__)
router = APIRouter(tags=["instances"])
InstanceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# How often a followed log is re-read while its attempt runs.
FOLLOW_POLL_S = 0.2
_LOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(by_reference=True),
    200: {
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "description": "the attempt's output; streamed until the attempt ends with follow=true",
    },
    501: {
        "description": "the executor package is not installed",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
}


async def _state(conn: Connection, workspace_id: int, instance_id: int) -> InstanceState:
    state: InstanceState | None = await conn.fetchval(
        Q["instance_state"], instance_id, workspace_id
    )
    if state is None:
        raise NotFound("instance", instance_id)
    return state


@router.get("/workspaces/{ws}/instances", response_model=Page[InstanceSummary])
async def list_instances(
    principal: Viewer,
    conn: Conn,
    workflow: str | None = None,
    state: Annotated[list[InstanceState] | None, Query()] = None,
    kind: Annotated[list[InstanceKind] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    backfill: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[InstanceSummary]:
    """Instances newest first, filtered by workflow, states, kinds, creation time, backfill."""
    rows = await conn.fetch(
        Q["list_instances"],
        principal.workspace_id,
        decode_id(cursor),
        workflow,
        state,
        kind,
        since,
        backfill,
        limit + 1,
    )
    page, nxt = page_by_id(rows, lambda r: int(r["id"]), limit)
    return Page(items=[InstanceSummary(**dict(r)) for r in page], next_cursor=nxt)


@router.get("/workspaces/{ws}/instances/{instance_id}", response_model=InstanceDetail)
async def get_instance(instance_id: InstanceId, principal: Viewer, conn: Conn) -> InstanceDetail:
    """An instance with every node and every attempt of each node."""
    out = await instance_repo.get(conn, principal.workspace_id, instance_id)
    extra = await conn.fetchrow(Q["instance_extra"], instance_id, principal.workspace_id)
    assert extra is not None
    return InstanceDetail(**out.model_dump(), reason=extra["reason"], rerun_of=extra["rerun_of"])


@router.post(
    "/workspaces/{ws}/instances/{instance_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InstanceRequestOut,
)
async def rerun_instance(
    instance_id: InstanceId,
    principal: Operator,
    conn: Conn,
    body: RerunRequest | None = None,
) -> InstanceRequestOut:
    """Ask for a run again: every node (`all`) or only failed, upstream_failed and terminated
    nodes (`failed`). An executor carries it out; follow the request's `state` at
    `GET .../requests/{id}`. Earlier attempts and their logs stay visible."""
    mode = body.mode if body is not None else "all"
    return await instance_requests.request(
        conn,
        principal.workspace_id,
        instance_id,
        "rerun",
        mode=mode,
        token_id=principal.token_id,
    )


@router.post(
    "/workspaces/{ws}/instances/{instance_id}/terminate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InstanceRequestOut,
)
async def terminate_instance(
    instance_id: InstanceId, principal: Operator, conn: Conn
) -> InstanceRequestOut:
    """Ask for the instance's running attempts to be killed and what has not finished to be
    marked `terminated`. An executor carries it out within about 2 s; follow the request's
    `state` at `GET .../requests/{id}`. Asked again while pending: the same request."""
    return await instance_requests.request(
        conn, principal.workspace_id, instance_id, "terminate", token_id=principal.token_id
    )


@router.get(
    "/workspaces/{ws}/instances/{instance_id}/requests/{request_id}",
    response_model=InstanceRequestOut,
)
async def get_instance_request(
    instance_id: InstanceId,
    request_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    principal: Viewer,
    conn: Conn,
) -> InstanceRequestOut:
    """A terminate or rerun request: `pending`, then `done` or `failed` (with `reason`)."""
    return await instance_requests.get(
        conn, principal.workspace_id, request_id, instance_id=instance_id
    )


class _Progress:
    """One node's position, read fresh on each poll of a followed log."""

    def __init__(self, row: Any) -> None:
        self.node_state: str = row["node_state"]
        self.instance_state: str = row["instance_state"]
        self.latest_attempt: int | None = row["latest_attempt"]
        self.has_attempt: bool = row["has_attempt"]

    @property
    def over(self) -> bool:
        """Nothing more will run for this node (until someone reruns it)."""
        return self.node_state in FINAL_NODE_STATES or self.instance_state in FINAL_INSTANCE_STATES


async def _progress(
    conn: Connection, workspace_id: int, instance_id: int, node: str, attempt: int | None
) -> _Progress:
    row = await conn.fetchrow(Q["node_progress"], instance_id, workspace_id, node, attempt or 0)
    if row is None:
        await _state(conn, workspace_id, instance_id)
        raise ApiError(404, f"node {node!r} not found in instance {instance_id}")
    return _Progress(row)


@router.get(
    "/workspaces/{ws}/instances/{instance_id}/nodes/{node}/log",
    response_class=PlainTextResponse,
    responses=_LOG_RESPONSES,
)
async def node_log(
    request: Request,
    instance_id: InstanceId,
    node: str,
    principal: Viewer,
    attempt: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="default: the latest")
    ] = None,
    follow: Annotated[bool, Query(description="stream until the attempt ends")] = False,
    after_seq: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="only chunks after this sequence number")
    ] = 0,
) -> Response:
    """An attempt's output as text. Headers: `X-Sluice-Attempt`, `X-Sluice-Last-Seq`,
    `X-Sluice-Finished`. With `follow=true` the body streams until the attempt finishes (if the
    node has not started yet, until its first attempt does)."""
    pool = get_pool(request)
    ws_id = principal.workspace_id
    async with pool.acquire() as conn:
        progress = await _progress(conn, ws_id, instance_id, node, attempt)
        if attempt is not None and not progress.has_attempt:
            raise ApiError(404, f"attempt {attempt} of node {node!r} not found")
        number = attempt if attempt is not None else progress.latest_attempt
        if not follow:
            if number is None:
                return PlainTextResponse(
                    "", headers={"X-Sluice-Finished": str(progress.over).lower()}
                )
            chunks, finished = await read_log(conn, ws_id, instance_id, node, number, after_seq)
            last = chunks[-1][0] if chunks else after_seq
            return PlainTextResponse(
                "".join(text for _, text in chunks),
                headers={
                    "X-Sluice-Attempt": str(number),
                    "X-Sluice-Last-Seq": str(last),
                    "X-Sluice-Finished": str(bool(finished)).lower(),
                },
            )
    stopping: asyncio.Event = request.app.state.stopping
    body = _follow(pool, stopping, ws_id, instance_id, node, number, after_seq)
    headers = {"X-Sluice-Attempt": str(number)} if number is not None else {}
    return StreamingResponse(body, media_type="text/plain; charset=utf-8", headers=headers)


async def _follow(
    pool: Any,
    stopping: asyncio.Event,
    ws_id: int,
    instance_id: int,
    node: str,
    attempt: int | None,
    after_seq: int,
) -> AsyncIterator[str]:
    """Yield new output until the attempt finishes, the node can no longer start, or the
    server stops. A connection is borrowed per poll, never held while waiting."""
    while not stopping.is_set():
        async with pool.acquire() as conn:
            if attempt is None:
                try:
                    progress = await _progress(conn, ws_id, instance_id, node, None)
                except (ApiError, NotFound):
                    return  # deleted while followed: the stream just ends
                if progress.latest_attempt is None and progress.over:
                    return
                attempt = progress.latest_attempt
            chunks: list[tuple[int, str]] = []
            finished = False
            if attempt is not None:
                try:
                    chunks, finished = await read_log(
                        conn, ws_id, instance_id, node, attempt, after_seq
                    )
                except NotFound:
                    return
        for seq, text in chunks:
            after_seq = seq
            yield text
        if finished:
            return
        try:
            await asyncio.wait_for(stopping.wait(), timeout=FOLLOW_POLL_S)
        except TimeoutError:
            pass
