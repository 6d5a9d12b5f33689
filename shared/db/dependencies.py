"""Dependencies between workflows: validation, the waits of new instances, and what they wait for.

A scheduled or backfill instance of a workflow with `depends_on` gets one `instance_dependencies`
row per upstream cycle when it is created (in the creating transaction), and is `blocked` while
one is open: the executor's promotion skips it. The upstream's success closes the rows and
unblocks the dependant in the same transaction as its final state (migration 0013), and NOTIFY
wakes the executor. `release_missed` is the fallback for the one case the trigger cannot see: a
dependant created while its upstream was finishing. Manual and API runs do not wait: they are
someone's explicit decision to run now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from shared.cron import latest_fire_at_or_before
from shared.db.errors import Invalid
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.common import Record
from shared.models.instances import UpstreamWait
from shared.models.workflows import WorkflowSpec, find_cycle

Q = load(__file__)
log = structlog.get_logger("sluice.dependencies")
# A large backfill waits in thousands of instances: name a few, count the rest.
_LOGGED_WAITS = 10
WAITING_KINDS = frozenset({"scheduled", "backfill"})
_TICK = timedelta(microseconds=1)


def waiting_reason(workflow: str, bizdate: date) -> str:
    """The reason a waiting instance shows, e.g. `upstream workflow ods for 20261203 ...`."""
    return f"upstream workflow {workflow} for {bizdate:%Y%m%d} not succeeded"


async def validate(conn: Executor, workspace_id: int, spec: WorkflowSpec) -> None:
    """Reject unknown upstream workflows and dependency cycles, naming them.

    Only `same`-cycle edges can deadlock (a `previous` edge points at an earlier cycle), so a
    cycle is a loop of `same` edges through the workflows stored in the workspace plus `spec`.
    """
    if not spec.depends_on:
        return
    stored = {
        str(r["name"]): list(_decode(r["depends_on"]))
        for r in await conn.fetch(Q["workspace_dependencies"], workspace_id)
    }
    for index, (name, _) in enumerate(spec.upstream_workflows()):
        if name != spec.name and name not in stored:
            raise Invalid(
                f"depends_on.{index}.workflow",
                f"workflow {name!r} does not exist in this workspace",
            )
    stored[spec.name] = [d.model_dump() for d in spec.depends_on]
    graph: dict[str, list[str]] = {}
    for name, deps in stored.items():
        ups = []
        for d in deps:
            upstream = name if d.get("workflow") == "self" else str(d.get("workflow"))
            if d.get("cycle", "same") == "same" and upstream in stored:
                ups.append(upstream)
        graph[name] = ups
    cycle = find_cycle(graph)
    if cycle:
        # find_cycle walks upstream edges; say it in the order work flows (upstream first).
        raise Invalid("depends_on", "dependency cycle " + " -> ".join(reversed(cycle)))


async def dependants(conn: Executor, workspace_id: int, name: str) -> list[str]:
    """Other workflows whose latest version names `name` in `depends_on` (deleting it would
    leave their instances waiting for a cycle that can never come)."""
    found = []
    for r in await conn.fetch(Q["workspace_dependencies"], workspace_id):
        if r["name"] != name and any(d.get("workflow") == name for d in _decode(r["depends_on"])):
            found.append(str(r["name"]))
    return sorted(found)


def _decode(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        import json

        value = json.loads(value)
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def previous_cycle(
    upstream: WorkflowSpec | None, own_cyctime: datetime, own_bizdate: date, *, same_workflow: bool
) -> tuple[date, datetime | None]:
    """The (bizdate, fire time) of the cycle before this one.

    A workflow's own previous cycle is its schedule's fire before this instance's; another
    workflow's previous cycle is its run for the day before (schedules of different workflows
    need not line up, the business date does).
    """
    if same_workflow and upstream is not None and upstream.schedule is not None:
        sched = upstream.schedule
        fire = latest_fire_at_or_before(sched.cron, sched.timezone, own_cyctime - _TICK)
        if fire is not None:
            from zoneinfo import ZoneInfo

            local = fire.astimezone(ZoneInfo(sched.timezone)).date() - timedelta(days=1)
            return local, fire
    return own_bizdate - timedelta(days=1), None


class PendingInstance(Record):
    """A freshly inserted waiting instance as dependency recording needs it."""

    id: int
    workspace_id: int
    workflow_id: int
    kind: str
    cyctime: datetime
    bizdate: date | None
    spec: WorkflowSpec


async def record(conn: Connection, created: Sequence[PendingInstance]) -> dict[int, str]:
    """Insert the dependency rows of new instances; return the reason per still-waiting id."""
    relevant = [c for c in created if c.kind in WAITING_KINDS and c.spec.depends_on and c.bizdate]
    if not relevant:
        return {}
    by_ws: dict[int, set[str]] = {}
    for c in relevant:
        by_ws.setdefault(c.workspace_id, set()).update(n for n, _ in c.spec.upstream_workflows())
    ids: dict[tuple[int, str], int] = {}
    for ws, names in by_ws.items():
        for r in await conn.fetch(Q["upstream_workflows"], ws, sorted(names)):
            ids[(ws, str(r["name"]))] = int(r["id"])
    cols: list[list[Any]] = [[] for _ in range(7)]
    for c in relevant:
        assert c.bizdate is not None
        for seq, (name, cycle) in enumerate(c.spec.upstream_workflows()):
            upstream_id = ids.get((c.workspace_id, name))
            if upstream_id is None:
                # Deleted since validation: keep the instance waiting, visibly, for nothing
                # that can arrive; an operator terminates it or recreates the workflow.
                upstream_id = 0
            bizdate, cyctime = c.bizdate, None
            if cycle == "previous":
                same = name == c.spec.name
                bizdate, cyctime = previous_cycle(
                    c.spec if same else None, c.cyctime, c.bizdate, same_workflow=same
                )
            for col, value in zip(
                cols, (c.id, seq, upstream_id, name, cycle, bizdate, cyctime), strict=True
            ):
                col.append(value)
    rows = await conn.fetch(Q["insert_dependencies"], *cols)
    reasons: dict[int, str] = {}
    for r in sorted(rows, key=lambda r: (r["instance_id"], r["seq"])):
        if r["open"] and r["instance_id"] not in reasons:
            reasons[int(r["instance_id"])] = waiting_reason(r["upstream_name"], r["bizdate"])
    if reasons:
        await conn.execute(Q["set_reasons"], list(reasons), list(reasons.values()))
        for instance_id, reason in list(reasons.items())[:_LOGGED_WAITS]:
            log.info("instance_waiting_for_upstream", instance_id=instance_id, reason=reason)
        if len(reasons) > _LOGGED_WAITS:
            log.info("instances_waiting_for_upstream", instances=len(reasons))
    return reasons


async def waits(conn: Executor, instance_id: int) -> list[UpstreamWait]:
    """The upstream cycles of an instance, each with the run that decides it and why it waits."""
    out = []
    for r in await conn.fetch(Q["instance_waits"], instance_id):
        satisfied = r["satisfied_at"] is not None or r["upstream_state"] == "succeeded"
        reason = None
        if not satisfied:
            reason = waiting_reason(r["workflow"], r["bizdate"])
            if not r["workflow_exists"]:
                reason += f" (workflow {r['workflow']} no longer exists)"
            elif r["upstream_instance_id"] is None:
                reason += " (no instance of that cycle yet)"
            else:
                reason += f" (instance {r['upstream_instance_id']} is {r['upstream_state']})"
            if r["frozen"]:
                reason += f"; workflow {r['workflow']} is frozen"
        out.append(
            UpstreamWait(
                workflow=r["workflow"],
                cycle=r["cycle"],
                bizdate=r["bizdate"],
                cyctime=r["cyctime"],
                satisfied=satisfied,
                satisfied_by=r["satisfied_by"],
                upstream_instance_id=r["upstream_instance_id"],
                upstream_state=r["upstream_state"],
                reason=reason,
            )
        )
    return out


async def release_missed(conn: Connection, window_s: float) -> list[int]:
    """Close open rows of dependants created in the last `window_s` whose upstream succeeded;
    return the instances this unblocked (the caller NOTIFYs the executor)."""
    async with conn.transaction():
        closed = [int(r["instance_id"]) for r in await conn.fetch(Q["release_missed"], window_s)]
        if not closed:
            return []
        released = [int(r["id"]) for r in await conn.fetch(Q["unblock"], closed)]
        if released:
            await conn.execute("SELECT pg_notify('sluice_instances', '')")
            log.info("instances_released_late", instances=released[:_LOGGED_WAITS])
    return released
