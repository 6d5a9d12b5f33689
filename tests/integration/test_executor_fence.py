"""The per-attempt fence as a real process: it kills its node's whole process tree (daemonized
descendants included) when its deadline passes, when its executor goes away, and when asked;
renewals keep the node alive; an executor running as root runs nodes as the node user."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.executor.fence_spawner import ForkedFence, serving_fences, spawn_fenced
from services.executor.fencing import FenceLink, fence_argv, fence_margin_s, stop_request
from services.executor.logs import LogBuffer
from services.executor.runners.connect import cancel_target
from services.executor.runners.process import run_process
from tests.support.executor import alive, kill_quietly, wait_gone

# A leader, a child in its group, and a daemon that left the group (setsid) with a child of its
# own: each writes its pid, then all sleep.
FAMILY = """
sleep 300 & echo "pid $!" >> pids
setsid bash -c 'echo "pid $$" >> pids; sleep 300 & echo "pid $!" >> pids; wait' &
echo "pid $$" >> pids
wait
"""


@pytest.fixture(params=["direct", "forked"])
async def fence_mode(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Each fence test twice: the fence started as its own interpreter, and forked by the
    executor's warm fence server (fence_spawner.py), as the executor service starts it."""
    if request.param == "direct":
        yield "direct"
        return
    with serving_fences():
        yield "forked"


async def start_fence(
    tmp_path: Path, code: str, deadline: float, mode: str = "direct", uid: int = -1, gid: int = -1
) -> asyncio.subprocess.Process | ForkedFence:
    if mode == "forked":
        proc = await spawn_fenced(
            ["bash", "-c", code],
            env=dict(os.environ),
            cwd=str(tmp_path),
            deadline=deadline,
            grace_s=0.5,
            uid=uid,
            gid=gid,
        )
        assert isinstance(proc, ForkedFence), "started directly, not by the fence server"
        return proc
    return await asyncio.create_subprocess_exec(
        *fence_argv(["bash", "-c", code], deadline, 0.5, uid, gid),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )


async def family_pids(tmp_path: Path, count: int = 4) -> list[int]:
    async with asyncio.timeout(10):
        while True:
            path = tmp_path / "pids"
            text = path.read_text() if path.exists() else ""
            pids = [int(line.split()[1]) for line in text.splitlines()]
            if len(pids) >= count:
                return pids
            await asyncio.sleep(0.02)


async def all_gone(pids: list[int], timeout_s: float) -> None:
    for pid in pids:
        await wait_gone(pid, timeout_s)
    assert not [p for p in pids if alive(p)]


async def test_deadline_without_renewal_kills_the_whole_tree(
    tmp_path: Path, fence_mode: str
) -> None:
    proc = await start_fence(tmp_path, FAMILY, time.monotonic() + 1.0, fence_mode)
    pids = await family_pids(tmp_path)
    try:
        assert all(alive(p) for p in pids)
        assert await asyncio.wait_for(proc.wait(), 10) == 137
        await all_gone(pids, 2)
        assert proc.stdout is not None
        note = (await proc.stdout.read()).decode()
        assert "lease deadline passed without renewal" in note
    finally:
        for pid in pids:
            kill_quietly(pid)


async def test_renewals_keep_the_node_alive_past_its_first_deadline(
    tmp_path: Path, fence_mode: str
) -> None:
    proc = await start_fence(tmp_path, "sleep 1.5; echo done", time.monotonic() + 0.5, fence_mode)
    assert proc.stdin is not None and proc.stdout is not None
    link = FenceLink(time.monotonic() + 0.5)
    link.attach(proc.stdin)
    for _ in range(8):
        link.extend(time.monotonic() + 0.5)
        await asyncio.sleep(0.25)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert (await proc.stdout.read()) == b"done\n"


async def test_executor_gone_kills_the_whole_tree_at_once(tmp_path: Path, fence_mode: str) -> None:
    proc = await start_fence(tmp_path, FAMILY, time.monotonic() + 3600, fence_mode)
    pids = await family_pids(tmp_path)
    try:
        assert proc.stdin is not None
        # What the kernel does to the pipe when the executor dies.
        proc.stdin.close()
        started = time.monotonic()
        assert await asyncio.wait_for(proc.wait(), 10) == 137
        await all_gone(pids, 2)
        assert time.monotonic() - started < 2
    finally:
        for pid in pids:
            kill_quietly(pid)


async def test_a_stop_request_terms_then_kills(tmp_path: Path, fence_mode: str) -> None:
    code = "trap 'echo term; exit 7' TERM; echo ready; sleep 300 & wait"
    proc = await start_fence(tmp_path, code, time.monotonic() + 3600, fence_mode)
    assert proc.stdin is not None and proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    assert stop_request(proc.stdin)
    assert await asyncio.wait_for(proc.wait(), 10) == 7
    assert b"term" in await proc.stdout.read()


async def test_leader_exit_kills_what_it_left_behind(tmp_path: Path, fence_mode: str) -> None:
    code = 'setsid sleep 300 & echo "pid $!" >> pids; exit 3'
    log = LogBuffer(1 << 20, 1 << 16)
    assert (
        await run_process(["bash", "-c", code], env={}, cwd=str(tmp_path), log=log, grace_s=0.5)
        == 3
    )
    pids = await family_pids(tmp_path, 1)
    await all_gone(pids, 2)


def test_the_margin_leaves_time_before_the_lease_expires() -> None:
    assert fence_margin_s(30) == 3.0
    assert fence_margin_s(6) == 1.0
    assert fence_margin_s(1) == 0.5


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
async def test_nodes_run_as_the_node_user_and_say_which_path_they_cannot_reach(
    tmp_path: Path,
) -> None:
    os.chmod(tmp_path, 0o755)
    log = LogBuffer(1 << 20, 1 << 16)
    code = await run_process(
        ["bash", "-c", "id -u; id -G"],
        env={"PATH": os.defpath},
        cwd=str(tmp_path),
        log=log,
        grace_s=0.5,
        user=(65534, 65534),
    )
    assert code == 0
    open_dir, hidden, program = private_program()
    log2 = LogBuffer(1 << 20, 1 << 16)
    code2 = await run_process(
        [str(program)],
        env={"PATH": os.defpath},
        cwd=str(tmp_path),
        log=log2,
        grace_s=0.5,
        user=(65534, 65534),
    )
    shutil.rmtree(open_dir)
    assert code2 == 127
    text = log_text(log) + log_text(log2)
    assert "65534\n65534\n" in text
    assert f"cannot run {program} as user 65534: {hidden} is not accessible to it" in text


def private_program() -> tuple[Path, Path, Path]:
    """An executable the node user cannot reach: it sits in a directory only root may enter,
    under one the node user may (pytest's own tmp root is private to root)."""
    open_dir = Path(tempfile.mkdtemp(prefix="sluice-fence-test-"))
    open_dir.chmod(0o755)
    hidden = open_dir / "private"
    hidden.mkdir(mode=0o700)
    program = hidden / "tool"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o755)
    return open_dir, hidden, program


def log_text(log: LogBuffer) -> str:
    log.close()
    return "".join(text for _, text in log.take())


async def start_late(command: list[str], *lines: str) -> tuple[int, bytes]:
    """Run a fence whose deadline passed before it started, its control pipe already holding
    `lines` (what a fence finds when a loaded host starts it late); return its status and
    output."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, "".join(f"{line}\n" for line in lines).encode())
        proc = await asyncio.create_subprocess_exec(
            *fence_argv(command, time.monotonic() - 1, 0.5),
            stdin=read_end,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode is not None
    return proc.returncode, out


async def test_a_fence_that_starts_after_its_deadline_still_reads_its_renewals() -> None:
    """A late start must not kill a node whose renewal is already waiting."""
    command = ["bash", "-c", "sleep 0.3; echo done"]
    assert await start_late(command, f"D {time.monotonic() + 3600!r}") == (0, b"done\n")


async def test_a_statement_fence_that_starts_after_its_deadline_still_cancels(
    pool: asyncpg.Pool[Any], db_url: str
) -> None:
    """The cancel key waits in the pipe; a fence that finds its deadline already passed must
    read it before acting, or the statement of a paused executor runs on."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(db_url)
    target = cancel_target(conn)
    sleeping = asyncio.create_task(conn.fetchval("SELECT pg_sleep(60)"))
    try:
        assert target is not None
        async with asyncio.timeout(10):
            while True:
                if await pool.fetchval(
                    "SELECT true FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    conn.get_server_pid(),
                ):
                    break
                await asyncio.sleep(0.01)
        status, out = await start_late(["--pg-cancel"], f"C {target}")
        assert status == 0
        assert b"SQL statement of backend" in out
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(sleeping, 10)
    finally:
        sleeping.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
            await sleeping
        await conn.close()
