"""Instance creation, shared by every intake path (events, API runs, schedules, backfills).

Instances start `waiting` with every node `pending`; the executor promotes them under
`max_parallel_instances` and marks root nodes ready. The overflow policies that decide at creation
time (`cancel_new`, `replace`) are applied here, under a row lock on the workflow so concurrent
intakes cannot both see a free place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from shared.db import dependencies
from shared.db.errors import NotFound
from shared.db.pool import Connection, Executor, json_text, next_ids
from shared.db.queries import load
from shared.db.workflows import LoadedVersion
from shared.lanes import lane_value
from shared.models.instances import AttemptOut, InstanceOut, NodeInstanceOut
from shared.weighting import with_runtime_priority

Q = load(__file__)
_SEP = "\x1f"


@dataclass(frozen=True)
class NewInstance:
    """One instance to create. `run_key` makes creation idempotent per workflow."""

    version: LoadedVersion
    kind: str
    cyctime: datetime
    bizdate: date | None = None
    priority: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    trigger_message: Any = None
    event_id: int | None = None
    admission_id: int | None = None
    run_key: str | None = None
    backfill_id: int | None = None
    rerun_of: int | None = None
    # An id reserved beforehand (a coalescing window names its instance before it exists).
    id: int | None = None
    # `trigger_message` as JSON text when the caller has encoded it already (intake encodes
    # each event once, for the event row and its instances).
    trigger_message_json: str | None = None


@dataclass(frozen=True)
class Created:
    id: int
    state: str
    replaced: int | None = None


async def _overflow_states(
    conn: Connection, items: list[NewInstance]
) -> tuple[list[str], list[str | None], dict[int, int]]:
    """Decide `waiting` or `cancelled` per item; cancel replaced instances. Returns
    (states, reasons, replaced instance id by item index)."""
    states = ["waiting"] * len(items)
    reasons: list[str | None] = [None] * len(items)
    replaced: dict[int, int] = {}
    in_db: dict[int, int] = {}
    # Instances of this batch already queued per workflow: they count against the limit too.
    queued: dict[int, int] = {}
    for index, item in enumerate(items):
        policy = item.version.spec.policy
        workflow_id = item.version.workflow_id
        # A backfill is a deliberate batch that queues under its own parallelism.
        exempt = item.kind == "backfill"
        if policy.max_parallel_instances is None or policy.overflow == "queue" or exempt:
            queued[workflow_id] = queued.get(workflow_id, 0) + 1
            continue
        if workflow_id not in in_db:
            await conn.execute(Q["lock_workflow_for_overflow"], workflow_id)
            in_db[workflow_id] = int(await conn.fetchval(Q["count_active"], workflow_id))
        if in_db[workflow_id] + queued.get(workflow_id, 0) < policy.max_parallel_instances:
            queued[workflow_id] = queued.get(workflow_id, 0) + 1
            continue
        if policy.overflow == "cancel_new":
            states[index] = "cancelled"
            reasons[index] = (
                f"max_parallel_instances={policy.max_parallel_instances} reached "
                "(overflow: cancel_new)"
            )
        else:
            victim = await conn.fetchval(Q["cancel_oldest_waiting"], workflow_id)
            if victim is not None:
                await conn.execute(Q["cancel_nodes_of"], victim)
                replaced[index] = int(victim)
                in_db[workflow_id] -= 1
            queued[workflow_id] = queued.get(workflow_id, 0) + 1
    return states, reasons, replaced


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json_text(value)


def _message_json(item: NewInstance) -> str | None:
    if item.trigger_message_json is not None:
        return item.trigger_message_json
    return _json_or_null(item.trigger_message)


def _lane(item: NewInstance, instance_id: int) -> str | None:
    spec = item.version.spec
    if spec.policy.lane is None:
        return None
    return lane_value(
        spec.policy.lane,
        workflow_type=spec.type,
        workflow_name=spec.name,
        version=item.version.version,
        instance_id=instance_id,
        cyctime=item.cyctime,
        timezone=spec.timezone or "UTC",
        workflow_params=spec.parameters,
        runtime_params=item.parameters,
        trigger_message=item.trigger_message,
    )


async def create_instances(
    conn: Connection, items: list[NewInstance], *, notify: bool = True
) -> list[Created | None]:
    """Insert instances and all their node rows in the caller's transaction.

    Returns, per item, the created instance or None when its `run_key` already existed.
    """
    if not items:
        return []
    states, reasons, replaced = await _overflow_states(conn, items)
    fresh = iter(await next_ids(conn, "instances_id_seq", sum(i.id is None for i in items)))
    ids = [item.id if item.id is not None else next(fresh) for item in items]
    cols: list[list[Any]] = [[] for _ in range(20)]
    node_cols: list[list[Any]] = [[] for _ in range(11)]
    node_aging: list[float | None] = []
    for index, (iid, item) in enumerate(zip(ids, items, strict=True)):
        spec = item.version.spec
        row = (
            iid,
            item.version.workspace_id,
            item.version.workflow_id,
            item.version.version,
            item.kind,
            states[index],
            item.priority,
            item.priority if item.priority is not None else spec.policy.priority,
            item.cyctime,
            item.bizdate,
            "{}" if item.parameters == {} else _json_or_null(item.parameters),
            _message_json(item),
            item.event_id,
            item.admission_id,
            item.run_key,
            item.backfill_id,
            item.rerun_of,
            reasons[index],
            spec.policy.aging_s,
            _lane(item, iid),
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
        plans = item.version.node_plans()
        if item.priority is not None:
            plans = with_runtime_priority(plans, item.priority, spec.policy.weighting)
        node_state = "pending" if states[index] == "waiting" else "terminated"
        for p in plans:
            for col, value in zip(
                node_cols,
                (
                    iid,
                    p.name,
                    p.type,
                    node_state,
                    p.priority,
                    p.weight,
                    p.resource_group,
                    _SEP.join(p.upstream),
                    p.retries,
                    p.retry_delay_s,
                    p.timeout_s,
                ),
                strict=True,
            ):
                col.append(value)
            node_aging.append(spec.policy.aging_s)
    inserted = {int(r["id"]) for r in await conn.fetch(Q["insert_instances"], *cols)}
    if inserted:
        await conn.execute(Q["insert_nodes"], *node_cols, list(inserted), node_aging)
        await dependencies.record(
            conn,
            [
                dependencies.PendingInstance(
                    id=iid,
                    workspace_id=item.version.workspace_id,
                    workflow_id=item.version.workflow_id,
                    kind=item.kind,
                    cyctime=item.cyctime,
                    bizdate=item.bizdate,
                    spec=item.version.spec,
                )
                for index, (iid, item) in enumerate(zip(ids, items, strict=True))
                # Filtered before building the records: each one validates its spec again,
                # which for a batch of event instances cost more than inserting them.
                if iid in inserted
                and states[index] == "waiting"
                and item.kind in dependencies.WAITING_KINDS
                and item.version.spec.depends_on
            ],
        )
        if notify:
            await conn.execute(Q["notify_instances"])
    return [
        Created(iid, states[i], replaced.get(i)) if iid in inserted else None
        for i, iid in enumerate(ids)
    ]


async def get(conn: Executor, workspace_id: int, instance_id: int) -> InstanceOut:
    """An instance with its nodes and every attempt of each node."""
    row = await conn.fetchrow(Q["get_instance"], instance_id, workspace_id)
    if row is None:
        raise NotFound("instance", instance_id)
    attempts: dict[int, list[AttemptOut]] = {}
    for a in await conn.fetch(Q["instance_attempts"], instance_id):
        data = dict(a)
        attempts.setdefault(data.pop("node_instance_id"), []).append(AttemptOut(**data))
    nodes = [
        NodeInstanceOut(**dict(n), attempts=attempts.get(n["id"], []))
        for n in await conn.fetch(Q["instance_nodes"], instance_id)
    ]
    waits = await dependencies.waits(conn, instance_id)
    coalesced = await conn.fetchval(Q["coalesced_event_ids"], instance_id)
    return InstanceOut(
        **dict(row),
        nodes=nodes,
        waiting_for=waits,
        coalesced_events=len(coalesced) if coalesced is not None else None,
        coalesced_event_ids=coalesced or [],
    )
