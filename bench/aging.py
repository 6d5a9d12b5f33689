"""`aging`: wait per priority under sustained overload, with and without `policy.aging_s`.

A resource group with `--slots` slots runs `sleep --node-s` shell nodes (capacity = slots /
node_s nodes per second). For `--duration` seconds a priority-8 workflow receives `--overload`
times that capacity and a priority-1 workflow a trickle of `--trickle-per-s` instances. One
executor process dispatches. The run is made twice: without aging and with `--aging-s`.

Wait = claim time - ready time of each node. Nodes still ready when the feed stops count with the
time they had waited so far (a lower bound), so a starved priority shows as a wait that grows with
the duration. One JSON line per run and priority: `claimed`, `still_waiting`, `p50_wait_s`,
`p99_wait_s`, `max_wait_s`, and for the aged run `bound_s` = 4 x aging_s (levels 1 -> 8).

    python -m bench.aging [--duration 60] [--slots 4] [--node-s 0.5] [--overload 2]
                          [--trickle-per-s 1] [--aging-s 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import emit, executor_processes, fresh_database, postgres_server
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import connect
from shared.db.workflows import LoadedVersion
from shared.models.workflows import WorkflowSpec

_TICK_S = 0.25


async def save(conn: Any, name: str, priority: int, node_s: float, aging_s: float | None) -> Any:
    policy: dict[str, Any] = {"priority": priority}
    if aging_s is not None:
        policy["aging_s"] = aging_s
    spec = WorkflowSpec.model_validate(
        {
            "name": name,
            "type": "manual",
            "policy": policy,
            "nodes": [{"name": "n", "type": "shell", "code": f"sleep {node_s}"}],
        }
    )
    saved = await workflow_repo.save(conn, 1, spec, publish=True)
    return await workflow_repo.load_version(conn, saved.workflow.id, saved.version)


async def feed(dsn: str, args: argparse.Namespace, aging_s: float | None) -> None:
    """Create instances at the overload and trickle rates for `--duration` seconds."""
    conn = await connect(dsn)
    try:
        # Only the work that can starve sets aging_s (priority 8 has nowhere to climb).
        high = await save(conn, "high", 8, args.node_s, None)
        low = await save(conn, "low", 1, args.node_s, aging_s)
        high_per_tick = args.overload * args.slots / args.node_s * _TICK_S
        low_per_tick = args.trickle_per_s * _TICK_S
        owed_high = owed_low = 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while loop.time() - start < args.duration:
            owed_high += high_per_tick
            owed_low += low_per_tick
            items: list[tuple[LoadedVersion, int]] = [(high, int(owed_high)), (low, int(owed_low))]
            owed_high -= int(owed_high)
            owed_low -= int(owed_low)
            batch = [
                NewInstance(version=v, kind="api", cyctime=datetime.now(UTC))
                for v, n in items
                for _ in range(n)
            ]
            async with conn.transaction():
                await create_instances(conn, batch)
            tick += 1
            # Ticks are scheduled from the start, so slow inserts do not lower the rate.
            await asyncio.sleep(max(0.0, start + tick * _TICK_S - loop.time()))
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def measure(dsn: str) -> dict[int, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT n.priority, n.state = 'ready' AS waiting,
                      extract(epoch FROM coalesce(n.claimed_at, clock_timestamp()) - n.ready_at)
                        AS wait_s
               FROM node_instances n WHERE n.ready_at IS NOT NULL"""
        )
    finally:
        await conn.close()
    out: dict[int, dict[str, Any]] = {}
    for priority in sorted({r["priority"] for r in rows}):
        mine = [r for r in rows if r["priority"] == priority]
        waits = [float(r["wait_s"]) for r in mine]
        out[priority] = {
            "claimed": sum(1 for r in mine if not r["waiting"]),
            "still_waiting": sum(1 for r in mine if r["waiting"]),
            "p50_wait_s": percentile(waits, 0.5),
            "p99_wait_s": percentile(waits, 0.99),
            "max_wait_s": percentile(waits, 1.0),
        }
    return out


async def run_one(
    server: str, args: argparse.Namespace, aging_s: float | None, log_dir: Path
) -> None:
    name = "sluice_bench_aging_" + ("on" if aging_s else "off")
    async with fresh_database(server, name) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE resource_groups SET slots = $1", args.slots)
        finally:
            await conn.close()
        async with executor_processes(
            dsn, 1, log_dir, SLUICE_EXECUTOR_CONCURRENCY=str(args.slots * 4)
        ):
            await feed(dsn, args, aging_s)
            result = await measure(dsn)
    for priority, figures in result.items():
        record: dict[str, Any] = {
            "scenario": "aging",
            "aging_s": aging_s,
            "priority": priority,
            "duration_s": args.duration,
            "capacity_per_s": round(args.slots / args.node_s, 3),
            "offered_per_s": round(
                args.overload * args.slots / args.node_s + args.trickle_per_s, 3
            ),
            **figures,
        }
        if aging_s is not None:
            record["bound_s"] = 4 * aging_s
        emit(record)


async def main(args: argparse.Namespace) -> None:
    with postgres_server() as server, tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        await run_one(server, args, None, Path(tmp))
        await run_one(server, args, args.aging_s, Path(tmp))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--node-s", type=float, default=0.5)
    parser.add_argument("--overload", type=float, default=2.0, help="x capacity at priority 8")
    parser.add_argument("--trickle-per-s", type=float, default=1.0, help="priority-1 instances")
    parser.add_argument("--aging-s", type=float, default=3.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
