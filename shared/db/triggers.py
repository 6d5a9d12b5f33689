"""Triggers: named event matchers, stored per workspace and bound to workflows by name."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import TypeAdapter

from shared.db.errors import Conflict, NotFound
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.common import Record
from shared.models.triggers import (
    AnyTriggerSpec,
    KafkaTriggerSpec,
    TriggerOut,
    TriggerSpec,
    WorkflowTriggerSpec,
)

Q = load(__file__)
SPEC_ADAPTER: TypeAdapter[AnyTriggerSpec] = TypeAdapter(TriggerSpec)
CHANNEL = "sluice_triggers"


class CandidateTrigger(Record):
    """A trigger as intake sees it."""

    id: int
    workspace_id: int
    name: str
    type: str
    subject: str
    enabled: bool
    spec: AnyTriggerSpec
    created_at: datetime


class Subject(Record):
    subject: str
    created_at: datetime


def subject_of(spec: AnyTriggerSpec, workspace_id: int) -> str:
    """What intake finds the trigger by: the topic, the bucket, or the watched workflow.

    A workflow is named within its workspace only, so its subject carries the workspace id: a
    finish in one workspace can never reach another workspace's trigger.
    """
    if isinstance(spec, WorkflowTriggerSpec):
        return workflow_subject(workspace_id, spec.workflow)
    return spec.topic if isinstance(spec, KafkaTriggerSpec) else spec.bucket


def workflow_subject(workspace_id: int, workflow: str) -> str:
    return f"{workspace_id}/{workflow}"


async def upsert(
    conn: Connection,
    workspace: str,
    workspace_id: int,
    spec: AnyTriggerSpec,
) -> tuple[TriggerOut, bool]:
    """Create or update a trigger and wake the listeners. Returns (trigger, created)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            Q["upsert_trigger"],
            workspace_id,
            spec.name,
            spec.type,
            subject_of(spec, workspace_id),
            spec.enabled,
            spec.model_dump(mode="json", exclude_none=False),
        )
        assert row is not None
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, spec.type)
    data = dict(row)
    created = bool(data.pop("created"))
    return TriggerOut(workspace=workspace, **data), created


async def get(conn: Executor, workspace_id: int, name: str) -> TriggerOut:
    row = await conn.fetchrow(Q["get_trigger"], workspace_id, name)
    if row is None:
        raise NotFound("trigger", name)
    return TriggerOut(**dict(row))


async def list_for(conn: Executor, workspace_id: int) -> list[TriggerOut]:
    return [TriggerOut(**dict(r)) for r in await conn.fetch(Q["list_triggers"], workspace_id)]


async def delete(conn: Connection, workspace_id: int, name: str) -> None:
    """Delete an unbound trigger; a trigger still named by a workflow is a conflict."""
    async with conn.transaction():
        trigger = await get(conn, workspace_id, name)
        bound = [r["name"] for r in await conn.fetch(Q["trigger_bound_workflows"], trigger.id)]
        if bound:
            raise Conflict(f"trigger {name!r} is bound to workflows: {', '.join(bound)}")
        await conn.execute(Q["delete_trigger"], workspace_id, name)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, trigger.type)


async def generation(conn: Connection) -> UUID:
    """The current version of the trigger set; it changes in the transaction of any change."""
    token: UUID = await conn.fetchval(Q["trigger_generation"])
    return token


async def load_all(conn: Connection) -> tuple[UUID, list[CandidateTrigger]]:
    """Every trigger and the generation they are of, from one snapshot."""
    rows = await conn.fetch(Q["all_triggers"])
    token: UUID = rows[0]["token"]
    return token, [
        CandidateTrigger(
            id=r["id"],
            workspace_id=r["workspace_id"],
            name=r["name"],
            type=r["type"],
            subject=r["subject"],
            enabled=r["enabled"],
            spec=SPEC_ADAPTER.validate_python(r["spec"]),
            created_at=r["created_at"],
        )
        for r in rows
        if r["id"] is not None
    ]


async def enabled_subjects(conn: Executor, source: str) -> list[Subject]:
    """Topics (kafka) or buckets (s3) some enabled trigger watches."""
    return [Subject(**dict(r)) for r in await conn.fetch(Q["enabled_subjects"], source)]
