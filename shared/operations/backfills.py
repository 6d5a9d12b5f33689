"""Backfills: one `backfill` instance per fire time of an interval, run as a group.

A backfill is a `backfills` row (the group O&M lists, terminates or reruns as a whole) and its
instances, created in one transaction. Each instance gets the cyctime of its fire time and the
bizdate of the day before in the workflow's time zone, exactly as a scheduled run of that time
would. The executor runs at most `parallelism` instances of a backfill at once.

Order: waiting instances start by queue priority DESC, then `created_at` ASC, then id ASC. All
instances of one backfill share their queue priority, and `create_instances` gives them ids and
`created_at` values (clock_timestamp(), row by row) in the order they are passed, so passing them
newest-first (`order: desc`) makes the newest fire time run first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Literal

import structlog

from shared import metrics
from shared.db import workflows as workflow_repo
from shared.db.errors import Conflict, Invalid, NotFound
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.fire_times import backfill_run_key, backfill_times, bizdate_of
from shared.models.backfills import BackfillOut, BackfillRequest
from shared.operations import requests

Q = load(__file__)
log = structlog.get_logger("sluice.backfill")

MAX_BACKFILL_INSTANCES = 10_000
# What rerunning a backfill picks up: with `failed`, the instances that did not succeed.
_RERUN_STATES: dict[str, frozenset[str]] = {
    "failed": frozenset({"failed", "terminated", "cancelled"}),
    "all": frozenset({"succeeded", "failed", "terminated", "cancelled"}),
}


async def create_backfill(
    conn: Connection,
    workspace_id: int,
    workflow: str,
    request: BackfillRequest,
    *,
    now: datetime,
    group_id: int | None = None,
) -> BackfillOut:
    """Create a backfill of the workflow's published version over [start, end].

    `group_id`: the backfill group (see `create_backfills`) its instances' dependencies are
    pinned to.

    Fire times after `now` are left to the schedule. Raises NotFound for an unknown workflow and
    Invalid (-> 422) when the workflow is unpublished, the interval holds no fire time, or more
    than MAX_BACKFILL_INSTANCES.
    """
    async with conn.transaction():
        wf = await workflow_repo.get(conn, workspace_id, workflow)
        if wf.published_version is None:
            raise Invalid("workflow", f"workflow {workflow!r} has no published version to backfill")
        loaded = await workflow_repo.load_version(conn, wf.id, wf.published_version)
        spec = loaded.spec
        start, last = request.bounds(spec.zone)
        end = min(last, now)
        times = backfill_times(spec, start, end, limit=MAX_BACKFILL_INSTANCES + 1)
        what = (
            f"cron {spec.schedule.cron!r} ({spec.zone})"
            if spec.schedule is not None
            else f"the daily midnight ({spec.zone})"
        )
        if not times:
            raise Invalid(
                "start",
                f"no fire time of {what} between {start.isoformat()} and {end.isoformat()}",
            )
        if len(times) > MAX_BACKFILL_INSTANCES:
            raise Invalid(
                "end",
                f"the interval holds more than {MAX_BACKFILL_INSTANCES} fire times of {what}; "
                "split it into several backfills",
            )
        row = await conn.fetchrow(
            Q["insert_backfill"],
            workspace_id,
            wf.id,
            start,
            last,
            request.parallelism,
            request.priority,
            request.order,
            group_id,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        backfill_id = int(row["id"])
        if request.order == "desc":
            times.reverse()
        created = await create_instances(
            conn,
            [
                NewInstance(
                    version=loaded,
                    kind="backfill",
                    cyctime=fire,
                    bizdate=bizdate_of(fire, spec.zone),
                    priority=request.priority,
                    run_key=backfill_run_key(backfill_id, fire),
                    backfill_id=backfill_id,
                )
                for fire in times
            ],
        )
    made = [item for item in created if item is not None]
    instance_ids = [item.id for item in made]
    metrics.INSTANCES_CREATED.labels("backfill").inc(len(instance_ids))
    log.info(
        "backfill_created",
        workflow=workflow,
        backfill_id=backfill_id,
        instances=len(instance_ids),
        first_fire=times[0].isoformat(),
        last_fire=times[-1].isoformat(),
        order=request.order,
        parallelism=request.parallelism,
    )
    return BackfillOut(
        id=backfill_id,
        workflow=workflow,
        start=start,
        end=last,
        parallelism=request.parallelism,
        priority=request.priority,
        order=request.order,
        instance_ids=instance_ids,
        created_at=row["created_at"],
        states=dict(Counter(item.state for item in made)),
    )


async def list_backfills(
    conn: Executor,
    workspace_id: int,
    *,
    workflow: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[BackfillOut]:
    """Backfills of a workspace (optionally of one workflow), newest first.

    `before` pages: pass the smallest id of the previous page.
    """
    rows = await conn.fetch(Q["list_backfills"], workspace_id, workflow, None, before, limit)
    return [BackfillOut(**dict(r)) for r in rows]


async def get_backfill(conn: Executor, workspace_id: int, backfill_id: int) -> BackfillOut:
    """One backfill with its instances in run order and the count of instances per state."""
    row = await conn.fetchrow(Q["list_backfills"], workspace_id, None, backfill_id, None, 1)
    if row is None:
        raise NotFound("backfill", backfill_id)
    return BackfillOut(**dict(row))


async def backfill_instance_ids(
    conn: Executor,
    workspace_id: int,
    backfill_id: int,
    *,
    states: Collection[str] | None = None,
) -> list[int]:
    """Ids of a backfill's instances in run order, optionally only those in `states`.

    What terminating or rerunning a backfill as a whole applies the instance operation to, e.g.
    ``states={"waiting", "running"}`` to terminate, ``{"failed", "terminated"}`` to rerun.
    """
    rows = await conn.fetch(
        Q["backfill_instances"],
        backfill_id,
        workspace_id,
        None if states is None else sorted(states),
    )
    if not rows:
        await get_backfill(conn, workspace_id, backfill_id)
    return [int(r["id"]) for r in rows]


async def terminate_backfill(conn: Connection, workspace_id: int, backfill_id: int) -> list[int]:
    """Ask for every waiting or running instance of a backfill to be terminated; return their ids.

    Requests, as for one instance (contract 4): an executor carries them out in the order asked,
    waiting instances first, so a slot freed by a terminated running one is not handed to the
    next instance of the group. Instances that have ended are left as they ended.
    """
    waiting = await backfill_instance_ids(conn, workspace_id, backfill_id, states={"waiting"})
    running = await backfill_instance_ids(conn, workspace_id, backfill_id, states={"running"})
    asked: list[int] = []
    for instance_id in [*waiting, *running]:
        try:
            await requests.request(conn, workspace_id, instance_id, "terminate")
        except Conflict:
            continue  # it ended on its own in the meantime
        asked.append(instance_id)
    log.info("backfill_terminate_requested", backfill_id=backfill_id, instances=len(asked))
    return asked


async def rerun_backfill(
    conn: Connection, workspace_id: int, backfill_id: int, mode: Literal["all", "failed"] = "failed"
) -> list[int]:
    """Ask for a backfill's ended instances to run again in place, in run order; return their ids.

    `failed`: the instances that did not succeed, each from its failed nodes on (succeeded nodes
    keep their results). `all`: every ended instance, every node. An executor carries the
    requests out; the instances keep their backfill, so they run again under its parallelism and
    in its order.
    """
    if mode not in _RERUN_STATES:
        raise Invalid("mode", f"must be 'all' or 'failed', got {mode!r}")
    ids = await backfill_instance_ids(conn, workspace_id, backfill_id, states=_RERUN_STATES[mode])
    asked: list[int] = []
    for instance_id in ids:
        try:
            await requests.request(conn, workspace_id, instance_id, "rerun", mode=mode)
        except Conflict:
            continue  # active again in the meantime
        asked.append(instance_id)
    log.info("backfill_rerun_requested", backfill_id=backfill_id, mode=mode, instances=len(asked))
    return asked


async def create_backfills(
    conn: Connection,
    workspace_id: int,
    workflows: list[str],
    request: BackfillRequest,
    *,
    now: datetime,
) -> list[BackfillOut]:
    """Backfill several workflows together, honouring the dependencies between them.

    One backfill per workflow, all in one transaction and one group, created upstream first:
    an instance of a dependant waits for the group's own upstream instance of its cycle (not an
    older run of the same day), so A(d) runs before B(d) while different days run in parallel
    up to each backfill's `parallelism`. Raises Invalid for an empty or repeated list.
    """
    if not workflows:
        raise Invalid("workflows", "name at least one workflow")
    if len(set(workflows)) != len(workflows):
        raise Invalid("workflows", "a workflow is listed twice")
    async with conn.transaction():
        specs = {}
        for name in workflows:
            wf = await workflow_repo.get(conn, workspace_id, name)
            if wf.published_version is None:
                raise Invalid("workflows", f"workflow {name!r} has no published version")
            specs[name] = (await workflow_repo.load_version(conn, wf.id, wf.published_version)).spec
        order = upstream_first(
            {n: [u for u, _ in s.upstream_workflows()] for n, s in specs.items()}
        )
        out: list[BackfillOut] = []
        for name in order:
            made = await create_backfill(
                conn, workspace_id, name, request, now=now, group_id=out[0].id if out else None
            )
            if not out:
                await conn.execute(Q["start_group"], made.id)
            out.append(made)
    return out


def upstream_first(upstream: dict[str, list[str]]) -> list[str]:
    """The workflows ordered so each comes after the ones it depends on (within the set).

    Ties keep the given order. The set is acyclic: dependency cycles are rejected at save.
    """
    done: list[str] = []
    placed: set[str] = set()
    pending = list(upstream)
    while pending:
        for name in pending:
            if all(u in placed or u == name or u not in upstream for u in upstream[name]):
                done.append(name)
                placed.add(name)
                pending.remove(name)
                break
        else:
            raise Invalid("workflows", "dependency cycle among " + ", ".join(pending))
    return done
