"""Trigger type `workflow` on real PostgreSQL with a real executor: one downstream run per finish
of the upstream with a wanted state, never two; the message carries state, bizdate and the
leaf nodes' outputs; `refire_on_rerun`; workspaces never see each other's finishes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler.completions import admit_finishes
from shared.db import triggers as trigger_repo
from shared.dedup import workflow_dedup_key
from shared.matching import match_workflow
from shared.models.triggers import WorkflowTriggerSpec
from shared.operations.instances import rerun_instance
from tests.factories import DEFAULT_WS, shell_node, workflow
from tests.support.executor import enqueue, running_executor, save, wait_instance
from tests.support.scheduler import Pool


def on_finish(name: str = "after_ods", **kw: Any) -> WorkflowTriggerSpec:
    return WorkflowTriggerSpec.model_validate(
        {"name": name, "type": "workflow", "workflow": "ods", **kw}
    )


async def add_trigger(
    pool: Pool, spec: WorkflowTriggerSpec, workspace_id: int = DEFAULT_WS
) -> None:
    async with pool.acquire() as conn:
        await trigger_repo.upsert(conn, "default", workspace_id, spec)


async def runs_of(pool: Pool, name: str) -> list[Any]:
    return list(
        await pool.fetch(
            "SELECT i.id, i.kind, i.trigger_message FROM instances i "
            "JOIN workflows w ON w.id = i.workflow_id WHERE w.name = $1 ORDER BY i.id",
            name,
        )
    )


ODS_NODES = [
    shell_node("extract", code='echo \'{"rows": 3}\' > "$SLUICE_OUTPUT_FILE"'),
    shell_node(
        "load",
        upstream=["extract"],
        code='test -e "${flag}" && echo \'{"table": "ods_orders"}\' > "$SLUICE_OUTPUT_FILE"',
    ),
]


async def test_c_starts_once_per_success_of_a_and_never_twice(
    pool: Pool, db_url: str, tmp_path: Any
) -> None:
    flag = tmp_path / "ok"
    ods = await save(
        pool,
        workflow("ods", type="manual", nodes=ODS_NODES, parameters={"flag": str(flag)}),
    )
    await add_trigger(pool, on_finish())
    await save(pool, workflow("report", trigger="after_ods"))
    [a] = await enqueue(pool, ods)
    async with running_executor(db_url):
        # A fails first: a `succeeded` trigger admits nothing (the finish is audited as filtered)
        assert await wait_instance(pool, a) == "failed"
        assert await admit_finishes(pool) == 1
        assert await runs_of(pool, "report") == []
        flag.touch()
        async with pool.acquire() as conn:
            await rerun_instance(conn, DEFAULT_WS, a, "failed")
        assert await wait_instance(pool, a) == "succeeded"
        assert await admit_finishes(pool) == 1
        assert await admit_finishes(pool) == 0
        [c] = await runs_of(pool, "report")
        assert await wait_instance(pool, c["id"]) == "succeeded"
        # a rerun that succeeds again does not fire again without refire_on_rerun
        async with pool.acquire() as conn:
            await rerun_instance(conn, DEFAULT_WS, a, "all")
        assert await wait_instance(pool, a) == "succeeded"
        assert await admit_finishes(pool) == 1
    assert [r["id"] for r in await runs_of(pool, "report")] == [c["id"]]
    assert c["kind"] == "triggered"
    assert c["trigger_message"] == {
        "workflow": "ods",
        "instance_id": a,
        "state": "succeeded",
        "bizdate": None,
        "outputs": {"load": {"table": "ods_orders"}},
        "generation": 2,
    }
    outcomes = await pool.fetch(
        "SELECT o.outcome FROM event_outcomes o JOIN events e ON e.id = o.event_id "
        "WHERE e.source = 'workflow' ORDER BY e.id, o.seq"
    )
    assert [o["outcome"] for o in outcomes] == ["filtered", "admitted", "duplicate"]


async def test_refire_on_rerun_fires_for_every_ending(pool: Pool, db_url: str) -> None:
    ods = await save(pool, workflow("ods", type="manual"))
    await add_trigger(pool, on_finish(refire_on_rerun=True, states=["succeeded", "failed"]))
    await save(pool, workflow("report", trigger="after_ods"))
    [a] = await enqueue(pool, ods)
    async with running_executor(db_url):
        assert await wait_instance(pool, a) == "succeeded"
        async with pool.acquire() as conn:
            await rerun_instance(conn, DEFAULT_WS, a, "all")
        assert await wait_instance(pool, a) == "succeeded"
    # both finishes were recorded before any admission: a late admitter loses none
    assert await admit_finishes(pool) == 2
    assert await admit_finishes(pool) == 0
    runs = await runs_of(pool, "report")
    assert [r["trigger_message"]["generation"] for r in runs] == [1, 2]


async def test_a_finish_in_another_workspace_never_fires(pool: Pool, db_url: str) -> None:
    other = int(await pool.fetchval("INSERT INTO workspaces (name) VALUES ('other') RETURNING id"))
    await add_trigger(pool, on_finish(), workspace_id=other)
    ods = await save(pool, workflow("ods", type="manual"))
    [a] = await enqueue(pool, ods)
    async with running_executor(db_url):
        assert await wait_instance(pool, a) == "succeeded"
    # no trigger watches ods in its own workspace: nothing is even queued
    assert await admit_finishes(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM workflow_finishes") == 0


def test_spec_validation_and_pure_matching() -> None:
    with pytest.raises(ValidationError, match="states"):
        on_finish(states=["succeeded", "succeeded"])
    with pytest.raises(ValidationError, match="states"):
        on_finish(states=["running"])
    spec = on_finish(states=["failed"])
    message = {"workflow": "ods", "instance_id": 7, "state": "failed", "generation": 3}
    assert match_workflow(spec, message).matched
    assert not match_workflow(spec, {**message, "state": "succeeded"}).matched
    assert not match_workflow(spec, {**message, "workflow": "dwd"}).matched
    assert workflow_dedup_key(spec, message) == "instance:7:failed"
    assert workflow_dedup_key(on_finish(refire_on_rerun=True), message) == "instance:7#3"
