"""Fencing with real executor processes, judged by the node processes' own timestamps.

A node appends `<attempt> <wall-clock ns>` to a file every 20 ms while it lives (the first
attempt for a minute, a retry for a second). An executor is paused (SIGSTOP) past its lease, or
killed (SIGKILL); another executor rescues the attempt. The first attempt's last heartbeat must
come before the retry's first one: never two live attempts of a node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from services.executor.fencing import fence_margin_s
from tests.factories import shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    executor_process,
    flow,
    save,
    wait_instance,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"
LEASE_S = 3.0


def heartbeat_code(path: Path) -> str:
    return f"""
if [ "$SLUICE_ATTEMPT" = 1 ]; then n=3000; else n=50; fi
while [ $n -gt 0 ]; do
  echo "$SLUICE_ATTEMPT $(date +%s%N)" >> {path}
  n=$((n - 1)); sleep 0.02
done
"""


def heartbeats(path: Path) -> dict[int, list[int]]:
    beats: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        attempt, ns = line.split()
        beats.setdefault(int(attempt), []).append(int(ns))
    return beats


def has_beats(path: Path) -> bool:
    return os.path.exists(path) and os.path.getsize(path) > 0


async def first_heartbeat(path: Path) -> None:
    async with asyncio.timeout(30):
        while True:
            if has_beats(path):
                return
            await asyncio.sleep(0.02)


async def rescue(
    pool: Pool, db_url: str, tmp_path: Path, disturb: signal.Signals
) -> tuple[dict[int, list[int]], int]:
    beats_path = tmp_path / "beats"
    node = shell_node("a", code=heartbeat_code(beats_path), retries=1, retry_delay_s=0)
    version = await save(pool, flow("fenced", [node]))
    [iid] = await enqueue(pool, version)
    env = {"SLUICE_LEASE_S": str(LEASE_S)}
    async with executor_process(db_url, tmp_path / "a.log", **env) as first:
        await first_heartbeat(beats_path)
        first.send_signal(disturb)
        disturbed_ns = time.time_ns()
        try:
            async with executor_process(db_url, tmp_path / "b.log", **env):
                assert await wait_instance(pool, iid) == "succeeded"
        finally:
            if disturb == signal.SIGSTOP:
                first.send_signal(signal.SIGCONT)
    attempts = await attempts_of(pool, iid, "a")
    assert [(a["state"], a["reason"]) for a in attempts] == [("lost", "lost"), ("succeeded", None)]
    assert attempts[0]["executor"] != attempts[1]["executor"]
    return heartbeats(beats_path), disturbed_ns


async def test_a_paused_executor_s_node_dies_before_its_attempt_is_retried(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    beats, paused_ns = await rescue(pool, db_url, tmp_path, signal.SIGSTOP)
    assert max(beats[1]) < min(beats[2])
    # The node died by itself while its executor was paused, a margin before the lease ended.
    fence_s = LEASE_S - fence_margin_s(LEASE_S)
    assert (max(beats[1]) - paused_ns) / 1e9 < fence_s + 0.5


async def test_a_killed_executor_s_node_dies_at_once(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    beats, killed_ns = await rescue(pool, db_url, tmp_path, signal.SIGKILL)
    assert max(beats[1]) < min(beats[2])
    assert (max(beats[1]) - killed_ns) / 1e9 < 1.0
