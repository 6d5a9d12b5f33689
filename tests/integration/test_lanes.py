"""Ordered lanes (policy.lane): one instance per lane value at a time, in admission order."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from services.dev.servers.kafka import EmbeddedKafka
from services.executor.operations import promote_instances
from shared.db import instances as instance_repo
from tests.factories import DEFAULT_WS, shell_node, workflow
from tests.integration.kafka_support import TopicFactory
from tests.support.executor import enqueue, executor_process, flow, save, wait_for
from tests.support.kafka_listener import bind, running_listener, send

Pool: TypeAlias = "asyncpg.Pool[Any]"
LANE = "${workflow.triggerMessage.key}"
KEYS = ("k0", "k1", "k2", "k3", "k4")
PER_KEY = 200


async def running(pool: Pool) -> list[int]:
    rows = await pool.fetch("SELECT id FROM instances WHERE state = 'running' ORDER BY id")
    return [r["id"] for r in rows]


async def test_only_the_head_of_each_lane_is_admitted(pool: Pool) -> None:
    version = await save(
        pool, flow("laned", [shell_node("a")], lane=LANE, max_parallel_instances=10)
    )
    keys = ["a", "a", "b", "a", "b", "c"]
    ids = [
        (await enqueue(pool, version, trigger_message={"key": k, "seq": n}))[0]
        for n, k in enumerate(keys)
    ]
    [no_key] = await enqueue(pool, version, trigger_message={"seq": 99})
    async with pool.acquire() as conn:
        await promote_instances(conn)
        assert await running(pool) == [ids[0], ids[2], ids[5], no_key]
        assert (await instance_repo.get(conn, DEFAULT_WS, ids[3])).lane == "a"
        assert (await instance_repo.get(conn, DEFAULT_WS, no_key)).lane == ""
        # Nothing else may start while the heads run.
        assert await promote_instances(conn) == []
        # A finished instance (failed too) frees its lane for the next in admission order.
        await conn.execute("UPDATE instances SET state = 'failed' WHERE id = $1", ids[0])
        assert await promote_instances(conn) == [ids[1]]
        await conn.execute(
            "UPDATE instances SET state = 'succeeded' WHERE id = ANY($1::bigint[])",
            [ids[1], ids[2]],
        )
        assert sorted(await promote_instances(conn)) == [ids[3], ids[4]]


async def test_lanes_respect_max_parallel_instances(pool: Pool) -> None:
    version = await save(
        pool, flow("capped", [shell_node("a")], lane=LANE, max_parallel_instances=2)
    )
    ids = [(await enqueue(pool, version, trigger_message={"key": k}))[0] for k in ("a", "b", "c")]
    async with pool.acquire() as conn:
        assert sorted(await promote_instances(conn)) == ids[:2]


def max_overlap(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.timeout(300)
async def test_per_key_order_holds_across_executors_and_a_kill(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "appended"
    # Each node appends (key, seq) to a file; a re-run after the kill appends its line again.
    code = f'sleep 0.02; echo "${{key}} ${{seq}}" >> {out}'
    node = shell_node(
        "append",
        code=code,
        retries=3,
        retry_delay_s=0,
        parameters={
            "key": "${workflow.triggerMessage.key}",
            "seq": "${workflow.triggerMessage.seq}",
        },
    )
    version = await save(pool, flow("ordered", [node], lane=LANE, max_parallel_instances=5))
    # Interleaved as a topic's partitions deliver them; admitted (ids given) in this order.
    messages = [{"key": k, "seq": n} for n in range(PER_KEY) for k in KEYS]
    total = len(messages)
    for m in messages:
        await enqueue(pool, version, trigger_message=m)
    env = {"SLUICE_LEASE_S": "3", "SLUICE_POLL_INTERVAL_S": "0.2"}
    async with AsyncExitStack() as stack:
        procs = [
            await stack.enter_async_context(executor_process(db_url, tmp_path / f"e{i}.log", **env))
            for i in range(2)
        ]
        await wait_for(
            pool,
            "SELECT count(*) >= $1 FROM instances WHERE state = 'succeeded'",
            total // 3,
            timeout_s=120,
        )
        # Killed while it runs nodes: their leases expire and the lanes wait for the re-runs.
        await wait_for(
            pool,
            "SELECT count(*) > 0 FROM attempts WHERE state = 'running' AND executor LIKE $1",
            f"%-{procs[0].pid}-%",
            timeout_s=60,
        )
        procs[0].send_signal(signal.SIGKILL)
        await procs[0].wait()
        await wait_for(
            pool,
            "SELECT count(*) = $1 FROM instances WHERE state = 'succeeded'",
            total,
            timeout_s=200,
        )
    lines = [line.split() for line in out.read_text().splitlines()]
    for key in KEYS:
        seqs = [int(s) for k, s in lines if k == key]
        # A node killed midway may have appended before it died: it runs again, in place.
        collapsed = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
        assert collapsed == list(range(PER_KEY)), key
    rows = await pool.fetch("SELECT lane, started_at, finished_at FROM instances")
    by_lane: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in rows:
        by_lane.setdefault(r["lane"], []).append((r["started_at"], r["finished_at"]))
    assert sorted(by_lane) == list(KEYS)
    assert all(max_overlap(spans) == 1 for spans in by_lane.values())
    assert max_overlap([s for spans in by_lane.values() for s in spans]) > 1
    # The scenario's summary line is part of its result: pytest -s shows it.
    print(  # noqa: T201
        f"lanes: keys={len(KEYS)} messages={total} lines={len(lines)} "
        f"peak_lanes_at_once={max_overlap([s for v in by_lane.values() for s in v])}"
    )


def collapsed(values: list[int]) -> list[int]:
    """A node killed midway may have appended before it died: its re-run appends again, in place."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


@pytest.mark.timeout(300)
async def test_kafka_keys_run_in_offset_order_per_key(
    pool: Pool,
    db_url: str,
    tmp_path: Path,
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
) -> None:
    topic = await kafka_topics(partitions=3)
    out = tmp_path / "appended"
    node = shell_node(
        "append",
        code=f'sleep 0.02; echo "${{key}} ${{offset}} ${{partition}}" >> {out}',
        retries=3,
        retry_delay_s=0,
        parameters={
            "key": "${workflow.triggerMessage.key}",
            "offset": "${workflow.triggerMessage.offset}",
            "partition": "${workflow.triggerMessage.partition}",
        },
    )
    spec = workflow(
        "keyed",
        trigger="keyed",
        nodes=[node],
        policy={"lane": LANE, "max_parallel_instances": 5},
    )
    await bind(pool, topic.name, trigger="keyed", workflow_spec=spec)
    keys: list[bytes | None] = [k.encode() for _ in range(PER_KEY) for k in KEYS]
    env = {"SLUICE_LEASE_S": "3", "SLUICE_POLL_INTERVAL_S": "0.2"}
    async with (
        running_listener(db_url, kafka_broker),
        executor_process(db_url, tmp_path / "e0.log", **env) as first,
        executor_process(db_url, tmp_path / "e1.log", **env),
    ):
        # Keyed records: the producer puts each key on one partition, in send order.
        await send(kafka_broker, topic.name, [b"{}"] * len(keys), keys=keys, partition=None)
        await wait_for(
            pool,
            "SELECT count(*) > 0 FROM attempts WHERE state = 'running' AND executor LIKE $1",
            f"%-{first.pid}-%",
            timeout_s=60,
        )
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await wait_for(
            pool,
            "SELECT count(*) = $1 FROM instances WHERE state = 'succeeded'",
            len(keys),
            timeout_s=200,
        )
    lines = [line.split() for line in out.read_text().splitlines()]
    for key in KEYS:
        offsets = [int(o) for k, o, _ in lines if k == key]
        assert len({p for k, _, p in lines if k == key}) == 1
        assert collapsed(offsets) == sorted(set(offsets)), key
        assert len(set(offsets)) == PER_KEY
    rows = await pool.fetch("SELECT lane, started_at, finished_at FROM instances")
    by_lane: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in rows:
        by_lane.setdefault(r["lane"], []).append((r["started_at"], r["finished_at"]))
    assert sorted(by_lane) == list(KEYS)
    assert all(max_overlap(spans) == 1 for spans in by_lane.values())
    assert max_overlap([s for spans in by_lane.values() for s in spans]) > 1
