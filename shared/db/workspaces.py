"""Workspaces: the isolation boundary every other object belongs to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.db.errors import Conflict, NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.common import Record

Q = load(__file__)


class WorkspaceOut(Record):
    id: int
    name: str
    parameters: dict[str, Any]
    created_at: datetime


async def get(conn: Executor, name: str) -> WorkspaceOut:
    row = await conn.fetchrow(Q["get_workspace"], name)
    if row is None:
        raise NotFound("workspace", name)
    return WorkspaceOut(**dict(row))


async def list_all(conn: Executor) -> list[WorkspaceOut]:
    return [WorkspaceOut(**dict(r)) for r in await conn.fetch(Q["list_workspaces"])]


async def create(
    conn: Executor,
    name: str,
    parameters: dict[str, Any] | None = None,
) -> WorkspaceOut:
    row = await conn.fetchrow(Q["create_workspace"], name, parameters or {})
    if row is None:
        raise Conflict(f"workspace {name!r} already exists")
    return WorkspaceOut(**dict(row))


async def set_parameters(conn: Executor, name: str, parameters: dict[str, Any]) -> WorkspaceOut:
    row = await conn.fetchrow(Q["set_workspace_parameters"], name, parameters)
    if row is None:
        raise NotFound("workspace", name)
    return WorkspaceOut(**dict(row))
