"""Terminate, rerun and log reading: the operations the API calls."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db.errors import Conflict, Invalid, NotFound
from shared.operations.instances import rerun_instance, terminate_instance
from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    flow,
    node_states,
    running_executor,
    save,
    wait_for,
    wait_gone,
    wait_instance,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"

# A child, a grandchild that ignores SIGTERM (so only SIGKILL ends it), and the node itself.
FAMILY = """
sleep 300 & echo "pid $!"
bash -c 'trap "" TERM; sleep 300 & echo "pid $!"; wait' &
echo "pid $!"
echo "pid $$"
echo ready
wait
"""


async def log_text(pool: Pool, instance_id: int, node: str, attempt: int | None = None) -> str:
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, DEFAULT_WS, instance_id, node, attempt)
    return "".join(text for _, text in chunks)


async def test_terminate_kills_every_process_within_two_seconds(pool: Pool, db_url: str) -> None:
    nodes = [
        shell_node("s1", code=FAMILY),
        shell_node("s2", code=FAMILY),
        shell_node("after", ["s1"]),
    ]
    version = await save(pool, flow("term", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, kill_grace_s=1.0):
        for node in ("s1", "s2"):
            await wait_for(
                pool,
                """SELECT 1 FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id
                   JOIN node_instances n ON n.id = a.node_instance_id
                   WHERE n.instance_id = $1 AND n.name = $2
                   GROUP BY a.id HAVING string_agg(l.data, '' ORDER BY l.seq) LIKE '%ready%'""",
                iid,
                node,
            )
        pids = [
            int(p)
            for node in ("s1", "s2")
            for p in re.findall(r"^pid (\d+)$", await log_text(pool, iid, node), re.MULTILINE)
        ]
        assert len(pids) == 8
        started = time.monotonic()
        async with pool.acquire() as conn:
            await terminate_instance(conn, DEFAULT_WS, iid)
        for pid in pids:
            await wait_gone(pid, max(0.0, 2.0 - (time.monotonic() - started)))
    assert await wait_instance(pool, iid) == "terminated"
    assert await node_states(pool, iid) == {
        "s1": "terminated",
        "s2": "terminated",
        "after": "terminated",
    }
    for node in ("s1", "s2"):
        [attempt] = await attempts_of(pool, iid, node)
        assert (attempt["state"], attempt["reason"]) == ("terminated", "terminated")


async def test_terminate_a_waiting_instance(pool: Pool) -> None:
    version = await save(pool, flow("w", [shell_node("a"), shell_node("b", ["a"])]))
    [iid] = await enqueue(pool, version)
    async with pool.acquire() as conn:
        await terminate_instance(conn, DEFAULT_WS, iid)
        assert await conn.fetchval("SELECT state FROM instances WHERE id = $1", iid) == "terminated"
        with pytest.raises(Conflict):
            await terminate_instance(conn, DEFAULT_WS, iid)
        with pytest.raises(NotFound):
            await terminate_instance(conn, DEFAULT_WS + 1000, iid)
        with pytest.raises(NotFound):
            await terminate_instance(conn, DEFAULT_WS, iid + 1000)
    assert await node_states(pool, iid) == {"a": "terminated", "b": "terminated"}


def rerun_flow(marker: Path) -> list[dict[str, Any]]:
    fail_once = f"echo attempt $SLUICE_ATTEMPT; [ -e {marker} ] || {{ touch {marker}; exit 1; }}"
    return [
        shell_node("a", code="echo a"),
        shell_node("b", ["a"], code=fail_once),
        shell_node("c", ["b"], code="echo c"),
        shell_node("e", code="echo e"),
    ]


@pytest.mark.parametrize(
    ("mode", "attempts"),
    [
        ("failed", {"a": 1, "b": 2, "c": 1, "e": 1}),
        ("all", {"a": 2, "b": 2, "c": 1, "e": 2}),
    ],
)
async def test_rerun_keeps_earlier_attempts_and_logs(
    pool: Pool, db_url: str, tmp_path: Path, mode: str, attempts: dict[str, int]
) -> None:
    version = await save(pool, flow("rerun", rerun_flow(tmp_path / "failed")))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
        assert await node_states(pool, iid) == {
            "a": "succeeded",
            "b": "failed",
            "c": "upstream_failed",
            "e": "succeeded",
        }
        async with pool.acquire() as conn:
            assert await rerun_instance(conn, DEFAULT_WS, iid, mode) == iid
        assert await wait_instance(pool, iid) == "succeeded"
    for node, count in attempts.items():
        assert [a["attempt"] for a in await attempts_of(pool, iid, node)] == list(
            range(1, count + 1)
        )
    assert await log_text(pool, iid, "b", 1) == "attempt 1\n[sluice] exit code 1\n"
    assert await log_text(pool, iid, "b", 2) == "attempt 2\n"
    assert await log_text(pool, iid, "b") == "attempt 2\n"


async def test_rerun_refusals(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("ok", [shell_node("a")]))
    [iid] = await enqueue(pool, version)
    async with pool.acquire() as conn:
        with pytest.raises(Conflict, match="still waiting"):
            await rerun_instance(conn, DEFAULT_WS, iid, "all")
        with pytest.raises(Invalid):
            await rerun_instance(conn, DEFAULT_WS, iid, "some")
        with pytest.raises(NotFound):
            await rerun_instance(conn, DEFAULT_WS + 1000, iid, "all")
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    async with pool.acquire() as conn:
        with pytest.raises(Conflict, match="no failed nodes"):
            await rerun_instance(conn, DEFAULT_WS, iid, "failed")
        assert await rerun_instance(conn, DEFAULT_WS, iid, "all") == iid
        assert await conn.fetchval("SELECT state FROM instances WHERE id = $1", iid) == "waiting"


async def test_read_log_answers_for_nodes_that_did_not_run(pool: Pool, db_url: str) -> None:
    nodes = [shell_node("bad", code="exit 2"), shell_node("after", ["bad"])]
    version = await save(pool, flow("logs", nodes))
    [iid] = await enqueue(pool, version)
    async with pool.acquire() as conn:
        assert await read_log(conn, DEFAULT_WS, iid, "after", None) == ([], False)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    async with pool.acquire() as conn:
        assert await read_log(conn, DEFAULT_WS, iid, "after", None) == ([], True)
        assert await read_log(conn, DEFAULT_WS, iid, "bad", 1) == (
            [(1, "[sluice] exit code 2\n")],
            True,
        )
        assert await read_log(conn, DEFAULT_WS, iid, "bad", 1, after_seq=1) == ([], True)
        for ws, instance, node, attempt, kind in [
            (DEFAULT_WS + 1000, iid, "bad", None, "instance"),
            (DEFAULT_WS, iid + 1000, "bad", None, "instance"),
            (DEFAULT_WS, iid, "nope", None, "node"),
            (DEFAULT_WS, iid, "bad", 2, "attempt"),
        ]:
            with pytest.raises(NotFound) as caught:
                await read_log(conn, ws, instance, node, attempt)
            assert caught.value.kind == kind


async def test_read_log_pages_with_limit(pool: Pool, db_url: str) -> None:
    code = "for i in 1 2 3; do echo line$i; done"
    version = await save(pool, flow("pages", [shell_node("p", code=code)]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, log_chunk_bytes=4):
        assert await wait_instance(pool, iid) == "succeeded"
    async with pool.acquire() as conn:
        everything, done = await read_log(conn, DEFAULT_WS, iid, "p", None)
        assert done and "".join(t for _, t in everything) == "line1\nline2\nline3\n"
        assert [seq for seq, _ in everything] == [1, 2, 3, 4, 5]
        first, more = await read_log(conn, DEFAULT_WS, iid, "p", None, limit=1)
        assert (first, more) == (everything[:1], False)
        rest, done = await read_log(conn, DEFAULT_WS, iid, "p", None, after_seq=first[0][0])
        assert (rest, done) == (everything[1:], True)
