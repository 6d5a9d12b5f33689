"""Workflows with immutable numbered versions: save, publish, freeze, clone, revert."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from shared.db import dependencies
from shared.db.errors import Conflict, Invalid, NotFound
from shared.db.notifications import check_spec_connections
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.common import Record
from shared.models.workflows import WorkflowOut, WorkflowSpec, WorkflowVersionOut
from shared.weighting import NodePlan, plan

Q = load(__file__)
CHANNEL = "sluice_workflows"


class SaveResult(Record):
    workflow: WorkflowOut
    version: int
    created: bool
    changed: bool


class LoadedVersion(Record):
    """A version as instance creation and the executor need it."""

    workflow_id: int
    workspace_id: int
    name: str
    type: str
    frozen: bool
    version: int
    spec: WorkflowSpec
    nodes: list[dict[str, Any]]

    def node_plans(self) -> list[NodePlan]:
        return [NodePlan(**{**n, "upstream": tuple(n["upstream"])}) for n in self.nodes]


def _spec_json(spec: WorkflowSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def _plan_json(spec: WorkflowSpec) -> list[dict[str, Any]]:
    return [{**asdict(p), "upstream": list(p.upstream)} for p in plan(spec)]


async def _trigger_id(conn: Connection, workspace_id: int, spec: WorkflowSpec) -> int | None:
    if spec.trigger is None:
        return None
    trigger_id = await conn.fetchval(Q["find_trigger_id"], workspace_id, spec.trigger)
    if trigger_id is None:
        raise Invalid("trigger", f"trigger {spec.trigger!r} does not exist in this workspace")
    return int(trigger_id)


async def save(
    conn: Connection, workspace_id: int, spec: WorkflowSpec, *, publish: bool = False
) -> SaveResult:
    """Store a spec as a new version (unless identical to the latest); optionally publish it."""
    async with conn.transaction():
        trigger_id = await _trigger_id(conn, workspace_id, spec)
        await dependencies.validate(conn, workspace_id, spec)
        await check_spec_connections(conn, workspace_id, spec)
        spec_json = _spec_json(spec)
        row = await conn.fetchrow(Q["lock_workflow"], workspace_id, spec.name)
        created = row is None
        changed = True
        if row is None:
            workflow_id = int(
                await conn.fetchval(
                    Q["insert_workflow"], workspace_id, spec.name, spec.type, trigger_id
                )
            )
            version = 1
            await conn.execute(
                Q["insert_version"], workflow_id, version, spec_json, _plan_json(spec)
            )
        else:
            workflow_id = int(row["id"])
            current = await conn.fetchval(Q["version_spec"], workflow_id, row["current_version"])
            if current == spec_json:
                version = int(row["current_version"])
                changed = False
            else:
                version = int(row["current_version"]) + 1
                await conn.execute(
                    Q["insert_version"], workflow_id, version, spec_json, _plan_json(spec)
                )
                await conn.execute(Q["bump_workflow"], workflow_id, version, spec.type, trigger_id)
        if publish:
            if row is None or row["published_version"] != version:
                changed = True
            await conn.execute(Q["publish_workflow"], workflow_id, version, trigger_id)
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(workflow_id))
        out = await get(conn, workspace_id, spec.name)
    return SaveResult(workflow=out, version=version, created=created, changed=changed)


async def publish(
    conn: Connection, workspace_id: int, name: str, version: int | None = None
) -> WorkflowOut:
    """Make a version (default: the latest) the one schedules and triggers use."""
    async with conn.transaction():
        row = await conn.fetchrow(Q["lock_workflow"], workspace_id, name)
        if row is None:
            raise NotFound("workflow", name)
        version = version or int(row["current_version"])
        raw = await conn.fetchval(Q["version_spec"], row["id"], version)
        if raw is None:
            raise NotFound("version", version)
        spec = WorkflowSpec.model_validate(raw)
        trigger_id = await _trigger_id(conn, workspace_id, spec)
        await conn.execute(Q["publish_workflow"], row["id"], version, trigger_id)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(row["id"]))
        return await get(conn, workspace_id, name)


async def set_frozen(conn: Connection, workspace_id: int, name: str, frozen: bool) -> WorkflowOut:
    async with conn.transaction():
        workflow_id = await conn.fetchval(Q["set_frozen"], workspace_id, name, frozen)
        if workflow_id is None:
            raise NotFound("workflow", name)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(workflow_id))
        return await get(conn, workspace_id, name)


async def clone(conn: Connection, workspace_id: int, name: str, new_name: str) -> SaveResult:
    """Copy the latest version under a new name as an unpublished workflow."""
    async with conn.transaction():
        source = await get(conn, workspace_id, name)
        if await conn.fetchrow(Q["lock_workflow"], workspace_id, new_name) is not None:
            raise Conflict(f"workflow {new_name!r} already exists")
        version = await get_version(conn, workspace_id, name, source.current_version)
        spec = WorkflowSpec.model_validate({**version.spec, "name": new_name})
        return await save(conn, workspace_id, spec)


async def revert(conn: Connection, workspace_id: int, name: str, version: int) -> SaveResult:
    """Save an earlier version's spec as the newest version (publish it to make it live)."""
    old = await get_version(conn, workspace_id, name, version)
    return await save(conn, workspace_id, WorkflowSpec.model_validate(old.spec))


async def get(conn: Executor, workspace_id: int, name: str) -> WorkflowOut:
    row = await conn.fetchrow(Q["get_workflow"], workspace_id, name)
    if row is None:
        raise NotFound("workflow", name)
    return WorkflowOut(**dict(row))


async def list_for(
    conn: Executor, workspace_id: int, type_: str | None = None
) -> list[WorkflowOut]:
    return [
        WorkflowOut(**dict(r)) for r in await conn.fetch(Q["list_workflows"], workspace_id, type_)
    ]


async def versions(conn: Executor, workspace_id: int, name: str) -> list[WorkflowVersionOut]:
    rows = await conn.fetch(Q["list_versions"], workspace_id, name)
    if not rows:
        raise NotFound("workflow", name)
    return [WorkflowVersionOut(**dict(r)) for r in rows]


async def get_version(
    conn: Executor, workspace_id: int, name: str, version: int
) -> WorkflowVersionOut:
    row = await conn.fetchrow(Q["get_version"], workspace_id, name, version)
    if row is None:
        await get(conn, workspace_id, name)
        raise NotFound("version", version)
    return WorkflowVersionOut(**dict(row))


async def load_version(conn: Executor, workflow_id: int, version: int) -> LoadedVersion:
    row = await conn.fetchrow(Q["load_version"], workflow_id, version)
    if row is None:
        raise NotFound("version", f"{workflow_id}@{version}")
    data = dict(row)
    nodes = data.pop("plan")
    return LoadedVersion(
        **{**data, "spec": WorkflowSpec.model_validate(data["spec"]), "nodes": nodes}
    )


async def delete(conn: Connection, workspace_id: int, name: str) -> None:
    """Delete a workflow with its history; refused while it has waiting or running instances."""
    async with conn.transaction():
        row = await conn.fetchrow(Q["lock_workflow"], workspace_id, name)
        if row is None:
            raise NotFound("workflow", name)
        active = await conn.fetchval(Q["active_instances"], row["id"])
        if active:
            raise Conflict(f"workflow {name!r} has {active} waiting or running instances")
        dependants = await dependencies.dependants(conn, workspace_id, name)
        if dependants:
            raise Conflict(f"workflow {name!r} is in depends_on of: {', '.join(dependants)}")
        await conn.execute(Q["delete_workflow"], row["id"])
