"""Chaos: three executor processes; one is killed (-9) with nodes running, another paused
(SIGSTOP) for longer than a lease. Every 50 ms the live node processes are counted from /proc
(not from rows): `max_parallel_instances` and resource-group slots are never exceeded, no node
ever has two live attempts, the attempts of the disturbed executors are rescued as `lost`, and
every run finishes exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from tests.factories import shell_node
from tests.support.chaos import SUMMARIES
from tests.support.executor import enqueue, executor_process, flow, save

Pool: TypeAlias = "asyncpg.Pool[Any]"
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

LEASE_S = 3.0
SAMPLE_S = 0.05
INSTANCES = 24  # per workflow
MAX_PARALLEL = 2  # workflow "capped": max_parallel_instances
SLOTS = 3  # workflow "grouped": its nodes share a resource group of this many slots
# Unique per run: the sampler looks at every process of the host, and another run of this
# scenario (another checkout, another CI job) may be going on beside this one.
MARKER = f"sluice-chaos-node-{uuid.uuid4().hex[:12]}"


def node_code(kind: str) -> str:
    # `true` last: bash stays the leader (it would exec a final simple command), so its
    # command line, which carries the marker, is what the sampler sees while the node lives.
    return f": {MARKER} {kind}; sleep 1.2; true"


@dataclass
class LiveNode:
    pid: int
    kind: str
    instance: str
    node: str
    attempt: str


def _environ(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs}


def live_nodes() -> list[LiveNode]:
    """Node leader processes alive right now: bash with the marker in its command line."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or os.path.basename(argv[0].decode(errors="replace")) != "bash":
                continue
            text = b" ".join(argv).decode(errors="replace")
            if MARKER not in text:
                continue
            with open(f"/proc/{pid}/stat") as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
            # Exited but not yet reaped; or a fork of the leader about to exec `sleep`, which
            # shares its command line for a moment: only the group leader is the node.
            if state == "Z" or int(pgrp) != int(pid):
                continue
            env = _environ(pid)
        except OSError:
            continue
        kind = "capped" if f"{MARKER} capped" in text else "grouped"
        found.append(
            LiveNode(
                int(pid),
                kind,
                env.get("SLUICE_INSTANCE_ID", "?"),
                env.get("SLUICE_NODE_NAME", "?"),
                env.get("SLUICE_ATTEMPT", "?"),
            )
        )
    return found


@dataclass
class Samples:
    count: int = 0
    peak: Counter[str] = field(default_factory=Counter)
    double_attempts: list[tuple[str, str]] = field(default_factory=list)


async def sample(stop: asyncio.Event, out: Samples) -> None:
    while not stop.is_set():
        nodes = await asyncio.to_thread(live_nodes)
        out.count += 1
        per_kind = Counter(n.kind for n in nodes)
        for kind, n in per_kind.items():
            out.peak[kind] = max(out.peak[kind], n)
        per_node = Counter((n.instance, n.node) for n in nodes)
        out.double_attempts.extend(key for key, n in per_node.items() if n > 1)
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            pass


async def running_on(pool: Pool, executor_pid: int) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM attempts WHERE state = 'running' AND executor LIKE $1",
            f"%-{executor_pid}-%",
        )
    )


async def wait_until(pool: Pool, query: str, *args: Any, timeout_s: float = 60) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            value = await pool.fetchval(query, *args)
            if value:
                return value
            await asyncio.sleep(SAMPLE_S)


async def test_executor_kill_and_pause(pool: Pool, db_url: str, tmp_path: Path) -> None:
    await pool.execute(f"INSERT INTO resource_groups (name, slots) VALUES ('chaos', {SLOTS})")
    retry: dict[str, Any] = {"retries": 3, "retry_delay_s": 0}
    capped = await save(
        pool,
        flow(
            "capped",
            [shell_node("a", code=node_code("capped"), **retry)],
            max_parallel_instances=MAX_PARALLEL,
        ),
    )
    grouped = await save(
        pool,
        flow(
            "grouped",
            [shell_node("a", code=node_code("grouped"), resource_group="chaos", **retry)],
        ),
    )
    ids = await enqueue(pool, capped, INSTANCES) + await enqueue(pool, grouped, INSTANCES)
    env = {"SLUICE_LEASE_S": str(LEASE_S), "SLUICE_POLL_INTERVAL_S": "0.2"}
    samples = Samples()
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample(stop_sampling, samples))
    async with AsyncExitStack() as stack:
        procs = [
            await stack.enter_async_context(executor_process(db_url, tmp_path / f"e{i}.log", **env))
            for i in range(3)
        ]
        killed, paused, _ = procs
        # Disturb the two executors when both are running a node at the same moment, each
        # started recently enough (under 0.6 s of its 1.2 s ago) to outlive the signals: checked
        # one after the other, the first could finish its only node while the test waits for
        # the second, and lose nothing.
        await wait_until(
            pool,
            "SELECT bool_and(EXISTS (SELECT 1 FROM attempts WHERE state = 'running' "
            "AND executor LIKE e AND started_at > now() - interval '600 milliseconds')) "
            "FROM unnest($1::text[]) AS e",
            [f"%-{proc.pid}-%" for proc in (killed, paused)],
        )
        killed.send_signal(signal.SIGKILL)
        disturbed_at = time.time()
        paused.send_signal(signal.SIGSTOP)
        try:
            # Longer than a lease: its attempts are swept and re-run elsewhere meanwhile.
            await asyncio.sleep(LEASE_S * 2)
        finally:
            paused.send_signal(signal.SIGCONT)
        await wait_until(
            pool,
            "SELECT count(*) = 0 FROM instances WHERE id = ANY($1) AND finished_at IS NULL",
            ids,
            timeout_s=180,
        )
        stop_sampling.set()
        await sampler
    rows = await pool.fetch(
        """SELECT i.id, i.state,
                  count(*) FILTER (WHERE a.state = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE a.reason = 'lost') AS lost
           FROM instances i JOIN node_instances n ON n.instance_id = i.id
           JOIN attempts a ON a.node_instance_id = n.id
           WHERE i.id = ANY($1) GROUP BY i.id, i.state""",
        ids,
    )
    admitted = sum(1 for r in rows if r["state"] == "succeeded")
    duplicated = sum(1 for r in rows if r["succeeded"] > 1)
    lost_runs = len(ids) - admitted
    lost_attempts = sum(int(r["lost"]) for r in rows)
    last_rescue = await pool.fetchval(
        "SELECT extract(epoch FROM max(finished_at)) FROM attempts WHERE reason = 'lost'"
    )
    recover_s = float(last_rescue or disturbed_at) - disturbed_at
    line = (
        f"chaos: scenario=executor_kill_pause sent={len(ids)} admitted={admitted} "
        f"lost={lost_runs} duplicated={duplicated} recover_s={recover_s:.1f}"
    )
    SUMMARIES.append(line)
    # The scenario's summary line is part of its result: pytest -s shows it.
    print(line)  # noqa: T201
    seen = f"samples={samples.count} peak={dict(samples.peak)} doubles={samples.double_attempts}"
    assert samples.count > 100, seen
    # Reached (the sampler sees the nodes) and never exceeded.
    assert samples.peak["capped"] == MAX_PARALLEL, seen
    assert samples.peak["grouped"] == SLOTS, seen
    assert samples.double_attempts == [], seen
    # At least one attempt each of the killed and the paused executor.
    assert lost_attempts >= 2, f"lost attempts: {lost_attempts}"
    assert (admitted, lost_runs, duplicated) == (len(ids), 0, 0)
