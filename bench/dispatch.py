"""`dispatch`: 10,000 queued single-node instances drained by 1 and 4 executor
processes, with limits enforced, priority order and limits verified while doing it.

Modes: `noop` — the node's code is `true`, which the shell runner completes in-process (no
subprocess: this measures sluice's own claim/finish path); `shell` — `exit 0`, a real bash
process per node. Instances get priorities 1/3/5/7/8 in turn; each run checks from the database
that claims came out in priority order (no claim of a lower priority before a higher one that
was already queued), that no resource group ran more nodes than its slots and no executor more
than its concurrency in any sample. The same run measures the raw SKIP LOCKED claim rate and the
raw bash spawn rate on the same database/machine and reports each figure as a ratio to it.

    python -m bench.dispatch [--instances 10000] [--replicas 1 4] [--modes noop shell]
                             [--concurrency 256] [--slots 256] [--groups 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.baseline import skip_locked_claim_rate, spawn_rate
from bench.common import emit, executor_processes, fresh_database, postgres_server
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import connect
from shared.models.workflows import WorkflowSpec

PRIORITIES = (1, 3, 5, 7, 8)
CODE = {"noop": "true", "shell": "exit 0"}
_SAMPLE = """
SELECT coalesce(max(n), 0) FROM (
    SELECT count(*) AS n FROM node_instances WHERE state = 'running' GROUP BY resource_group) g
"""
_SAMPLE_EXECUTOR = """
SELECT coalesce(max(n), 0) FROM (
    SELECT count(*) AS n FROM node_instances WHERE state = 'running' GROUP BY executor) e
"""


async def enqueue(dsn: str, instances: int, code: str, groups: int = 1) -> None:
    """`instances` waiting instances with priorities cycling through 1..8, of one workflow, or
    with `groups` > 1 of one workflow per resource group `g<i>`, taken in turn."""
    conn = await connect(dsn)
    try:
        versions = []
        for g in range(groups):
            node: dict[str, Any] = {"name": "n", "type": "shell", "code": code}
            if groups > 1:
                node["resource_group"] = f"g{g}"
                await conn.execute(
                    "INSERT INTO resource_groups (name, slots) VALUES ($1, 32)", f"g{g}"
                )
            spec = WorkflowSpec.model_validate(
                {
                    "name": "dispatch" if groups == 1 else f"dispatch_g{g}",
                    "type": "manual",
                    "nodes": [node],
                }
            )
            saved = await workflow_repo.save(conn, 1, spec, publish=True)
            versions.append(
                await workflow_repo.load_version(conn, saved.workflow.id, saved.version)
            )
        cyctime = datetime.now(UTC)
        for start in range(0, instances, 1000):
            items = [
                NewInstance(
                    version=versions[i % groups],
                    kind="api",
                    cyctime=cyctime,
                    priority=PRIORITIES[i % len(PRIORITIES)],
                )
                for i in range(start, min(start + 1000, instances))
            ]
            async with conn.transaction():
                await create_instances(conn, items, notify=False)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def sample(dsn: str, done: asyncio.Event) -> tuple[int, int]:
    """Most nodes running at once in one group / on one executor, sampled until `done`."""
    conn = await asyncpg.connect(dsn)
    group_peak = executor_peak = 0
    try:
        while not done.is_set():
            group_peak = max(group_peak, int(await conn.fetchval(_SAMPLE)))
            executor_peak = max(executor_peak, int(await conn.fetchval(_SAMPLE_EXECUTOR)))
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return group_peak, executor_peak


async def wait_drained(dsn: str, instances: int, timeout_s: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                finished = await conn.fetchval(
                    "SELECT count(*) FROM instances WHERE finished_at IS NOT NULL"
                )
                if finished >= instances:
                    return
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def measure(dsn: str, instances: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        span = await conn.fetchrow(
            """SELECT count(*) AS n, min(started_at) AS first, max(started_at) AS last
               FROM attempts"""
        )
        assert span is not None
        states = {
            r["state"]: r["n"]
            for r in await conn.fetch("SELECT state, count(*) AS n FROM instances GROUP BY 1")
        }
        order = await conn.fetch(
            """SELECT n.priority FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id
               ORDER BY a.id"""
        )
        per_executor = {
            r["executor"]: r["n"]
            for r in await conn.fetch("SELECT executor, count(*) AS n FROM attempts GROUP BY 1")
        }
    finally:
        await conn.close()
    priorities = [r["priority"] for r in order]
    inversions = sum(1 for a, b in itertools.pairwise(priorities) if b > a)
    seconds = (span["last"] - span["first"]).total_seconds()
    return {
        "attempts": span["n"],
        "node_starts_per_s": round(span["n"] / seconds) if seconds > 0 else None,
        "claim_span_s": round(seconds, 3),
        "states": states,
        "priority_inversions": inversions,
        "attempts_per_executor": sorted(per_executor.values(), reverse=True),
    }


async def run_one(
    server: str, mode: str, replicas: int, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    async with fresh_database(server, f"sluice_bench_dispatch_{mode}_{replicas}") as dsn:
        await enqueue(dsn, args.instances, CODE[mode], args.groups)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE resource_groups SET slots = $1", args.slots)
        finally:
            await conn.close()
        done = asyncio.Event()
        sampler = asyncio.create_task(sample(dsn, done))
        started = time.perf_counter()
        async with executor_processes(
            dsn,
            replicas,
            log_dir,
            SLUICE_EXECUTOR_CONCURRENCY=str(args.concurrency),
        ):
            await wait_drained(dsn, args.instances, args.timeout)
            wall = time.perf_counter() - started
        done.set()
        group_peak, executor_peak = await sampler
        result = await measure(dsn, args.instances)
    return {
        "scenario": "dispatch",
        "mode": mode,
        "replicas": replicas,
        "instances": args.instances,
        "slots": args.slots,
        "groups": args.groups,
        "concurrency": args.concurrency,
        **result,
        "wall_s_including_startup": round(wall, 3),
        "max_running_in_group": group_peak,
        "max_running_on_executor": executor_peak,
        "limits_held": group_peak <= args.slots and executor_peak <= args.concurrency,
    }


async def main(args: argparse.Namespace) -> None:
    with postgres_server() as server, tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        async with fresh_database(server, "sluice_bench_dispatch_baseline") as dsn:
            claim = await skip_locked_claim_rate(dsn, args.instances, 100, 1)
        spawn = await spawn_rate(1000, 16)
        emit(
            {
                "scenario": "dispatch_baseline",
                "skip_locked_claim_rows_per_s": round(claim),
                "bash_spawn_per_s": round(spawn),
            }
        )
        for mode in args.modes:
            for replicas in args.replicas:
                record = await run_one(server, mode, replicas, args, Path(tmp))
                rate = record["node_starts_per_s"] or 0
                record["ratio_to_skip_locked_claim"] = round(rate / claim, 3)
                if mode == "shell":
                    record["ratio_to_bash_spawn"] = round(rate / spawn, 3)
                emit(record)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--modes", nargs="+", choices=sorted(CODE), default=["noop", "shell"])
    parser.add_argument("--concurrency", type=int, default=256, help="per executor")
    parser.add_argument("--slots", type=int, default=256, help="of every resource group")
    parser.add_argument(
        "--groups", type=int, default=1, help="resource groups the instances are spread over"
    )
    parser.add_argument("--timeout", type=float, default=600)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
