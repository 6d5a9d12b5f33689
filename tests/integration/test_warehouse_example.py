"""`examples/warehouse` as `sluice dev` loads it: a two-day backfill of ODS -> DWD -> report runs
each day's layers in order, and the completion trigger announces each report to a webhook."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

from services.dev import load_examples
from services.scheduler.completions import serve_finishes
from shared.db import workflows as workflow_repo
from shared.models.backfills import BackfillRequest
from shared.models.workflows import WorkflowSpec
from shared.operations.backfills import create_backfills
from tests.factories import DEFAULT_WS
from tests.support.executor import running_executor, wait_instance
from tests.support.receivers import http_receiver
from tests.support.scheduler import Pool, utc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "warehouse"
LAYERS = ["warehouse_ods_orders", "warehouse_dwd_orders", "warehouse_daily_report"]


async def test_the_warehouse_runs_layer_by_layer_and_announces_each_report(
    pool: Pool, db_url: str
) -> None:
    async with pool.acquire() as conn:
        loaded = await load_examples(conn, EXAMPLE)
    assert loaded == [
        "trigger warehouse_report_finished",
        *(f"workflow {name}" for name in LAYERS),
        "workflow warehouse_report_announce",
    ]
    async with http_receiver() as hook:
        async with pool.acquire() as conn:
            announce = await workflow_repo.get_version(
                conn, DEFAULT_WS, "warehouse_report_announce", 1
            )
            spec = {**announce.spec, "parameters": {"webhook_url": hook.url}}
            await workflow_repo.save(
                conn, DEFAULT_WS, WorkflowSpec.model_validate(spec), publish=True
            )
            request = BackfillRequest.model_validate(
                {"start": "20261201", "end": "20261202", "parallelism": 2}
            )
            made = await create_backfills(
                conn, DEFAULT_WS, list(reversed(LAYERS)), request, now=utc("2026-12-05T00:00")
            )
        assert [m.workflow for m in made] == LAYERS
        stop = asyncio.Event()
        finishes = asyncio.create_task(serve_finishes(pool, db_url, stop, poll_s=5))
        try:
            async with running_executor(db_url):
                for m in made:
                    for iid in m.instance_ids:
                        assert await wait_instance(pool, iid) == "succeeded"
                requests = await hook.wait(2)
        finally:
            stop.set()
            await finishes
    bodies = sorted((r.json() for r in requests), key=lambda b: b["bizdate"])
    assert [(b["workflow"], b["state"], b["bizdate"]) for b in bodies] == [
        ("warehouse_daily_report", "succeeded", "20261201"),
        ("warehouse_daily_report", "succeeded", "20261202"),
    ]
    assert bodies[0]["outputs"] == {"publish": {"report": "daily_orders_20261201", "rows": 1180}}
    rows = await pool.fetch(
        "SELECT w.name, i.bizdate, i.started_at, i.finished_at FROM instances i "
        "JOIN workflows w ON w.id = i.workflow_id WHERE i.kind = 'backfill'"
    )
    at = {(r["name"], r["bizdate"].day): r for r in rows}
    for day in (1, 2):
        for upstream, downstream in pairwise(LAYERS):
            assert at[(downstream, day)]["started_at"] >= at[(upstream, day)]["finished_at"]
    dwd = "warehouse_dwd_orders"
    assert at[(dwd, 2)]["started_at"] >= at[(dwd, 1)]["finished_at"]
