"""The per-attempt fence as a real process: it kills its node's whole process tree (daemonized
descendants included) when its deadline passes, when its executor goes away, and when asked;
renewals keep the node alive; an executor running as root runs nodes as the node user."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from services.executor.fencing import FenceLink, fence_argv, fence_margin_s, stop_request
from services.executor.logs import LogBuffer
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


async def start_fence(
    tmp_path: Path, code: str, deadline: float, uid: int = -1, gid: int = -1
) -> asyncio.subprocess.Process:
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


async def test_deadline_without_renewal_kills_the_whole_tree(tmp_path: Path) -> None:
    proc = await start_fence(tmp_path, FAMILY, time.monotonic() + 1.0)
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


async def test_renewals_keep_the_node_alive_past_its_first_deadline(tmp_path: Path) -> None:
    proc = await start_fence(tmp_path, "sleep 1.5; echo done", time.monotonic() + 0.5)
    assert proc.stdin is not None and proc.stdout is not None
    link = FenceLink(time.monotonic() + 0.5)
    link.attach(proc.stdin)
    for _ in range(8):
        link.extend(time.monotonic() + 0.5)
        await asyncio.sleep(0.25)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert (await proc.stdout.read()) == b"done\n"


async def test_executor_gone_kills_the_whole_tree_at_once(tmp_path: Path) -> None:
    proc = await start_fence(tmp_path, FAMILY, time.monotonic() + 3600)
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


async def test_a_stop_request_terms_then_kills(tmp_path: Path) -> None:
    code = "trap 'echo term; exit 7' TERM; echo ready; sleep 300 & wait"
    proc = await start_fence(tmp_path, code, time.monotonic() + 3600)
    assert proc.stdin is not None and proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    assert stop_request(proc.stdin)
    assert await asyncio.wait_for(proc.wait(), 10) == 7
    assert b"term" in await proc.stdout.read()


async def test_leader_exit_kills_what_it_left_behind(tmp_path: Path) -> None:
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
