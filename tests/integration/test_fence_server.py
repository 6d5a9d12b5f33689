"""The warm fence server: fences forked per attempt behave as directly started ones, die with the
server, and a server that is gone or a request it cannot take falls back to a direct start."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from services.executor import fence_spawner
from services.executor.fence_spawner import ForkedFence, serving_fences, spawn_fenced
from services.executor.runners.process import exit_status
from tests.support.executor import alive, kill_quietly, wait_gone

FAR = 3600.0


async def bash(code: str, tmp_path: Path, **env: str) -> ForkedFence | asyncio.subprocess.Process:
    return await spawn_fenced(
        ["bash", "-c", code],
        env={"PATH": os.environ["PATH"], **env},
        cwd=str(tmp_path),
        deadline=time.monotonic() + FAR,
        grace_s=0.5,
    )


async def finished(proc: ForkedFence | asyncio.subprocess.Process) -> tuple[int, str]:
    assert proc.stdout is not None and proc.stdin is not None
    output = await asyncio.wait_for(proc.stdout.read(), 10)
    code = exit_status(await asyncio.wait_for(proc.wait(), 10))
    proc.stdin.close()
    return code, output.decode()


def server_pid() -> int:
    """The fence server: this process's child running fence_server."""
    [server] = [
        c
        for c in psutil.Process().children()
        if any("fence_server" in part for part in c.cmdline())
    ]
    return int(server.pid)


async def test_a_forked_fence_runs_its_node_with_its_env_and_cwd(tmp_path: Path) -> None:
    with serving_fences():
        proc = await bash('echo "$GREETING from $(pwd)"; exit 3', tmp_path, GREETING="hi")
        assert isinstance(proc, ForkedFence)
        assert await finished(proc) == (3, f"hi from {tmp_path}\n")
        killed = await bash("kill -TERM $$", tmp_path)
        assert (await finished(killed))[0] == 128 + signal.SIGTERM


async def test_a_node_cannot_reach_its_fence_s_status_pipe(tmp_path: Path) -> None:
    with serving_fences():
        code = 'for fd in 3 4 5 6 7 8 9; do (echo "X 0" >&$fd) 2>/dev/null && echo "open $fd"; done'
        forged = await bash(f"{code}; exit 5", tmp_path)
        assert isinstance(forged, ForkedFence)
        assert await finished(forged) == (5, "")


async def test_many_fences_at_once_each_get_their_own_output(tmp_path: Path) -> None:
    with serving_fences():
        procs = [await bash(f"echo {i}; exit {i % 7}", tmp_path) for i in range(40)]
        assert all(isinstance(p, ForkedFence) for p in procs)
        results = await asyncio.gather(*(finished(p) for p in procs))
        assert results == [(i % 7, f"{i}\n") for i in range(40)]
        assert len({p.pid for p in procs}) == 40


async def test_the_server_holds_no_secret_and_its_nodes_cannot_read_it(tmp_path: Path) -> None:
    with serving_fences():
        proc = await bash("exit 0", tmp_path, SLUICE_PARAM_TOKEN="node-secret")
        await finished(proc)
        pid = server_pid()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")  # noqa: ASYNC240
        assert [e.split(b"=")[0] for e in environ if e] == [b"PATH"]
        if os.getuid() != 0:
            # Nodes share this uid: the server being non-dumpable is what makes its /proc files
            # (environ, mem, fds) root's rather than theirs.
            assert os.stat(f"/proc/{pid}/environ").st_uid == 0
            return
        # As root, nodes run as the node user: through the server, one tries to read it.
        probe = await spawn_fenced(
            ["bash", "-c", f"cat /proc/{pid}/environ; head -c 64 /proc/{pid}/mem; echo done"],
            env={"PATH": os.environ["PATH"]},
            cwd="/",
            deadline=time.monotonic() + FAR,
            grace_s=0.5,
            uid=65534,
            gid=65534,
        )
        assert isinstance(probe, ForkedFence)
        code, output = await finished(probe)
        assert code == 0 and output.endswith("done\n") and "PATH=" not in output
        assert output.count("Permission denied") == 2, output


async def test_a_killed_fence_takes_its_node_with_it(tmp_path: Path) -> None:
    with serving_fences():
        proc = await bash("echo $$; sleep 300", tmp_path)
        assert isinstance(proc, ForkedFence) and proc.stdout is not None
        node = int(await proc.stdout.readline())
        proc.kill()
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        proc.stdin.close()
        await wait_gone(node, 5)


async def test_the_server_dying_kills_its_fences_nodes_and_starts_fall_back(
    tmp_path: Path,
) -> None:
    with serving_fences():
        proc = await bash("echo $$; sleep 300", tmp_path)
        assert isinstance(proc, ForkedFence) and proc.stdout is not None
        node = int(await proc.stdout.readline())
        try:
            os.kill(server_pid(), signal.SIGKILL)
            # The fence's parent died: it kills its node as when its executor dies.
            code, note = await finished(proc)
            assert (code, note) == (137, "sluice-fence: executor gone; killing the process group\n")
            await wait_gone(node, 5)
            assert not alive(node)
            later = await bash("echo still starts", tmp_path)
            assert not isinstance(later, ForkedFence)
            assert await finished(later) == (0, "still starts\n")
        finally:
            kill_quietly(node)


async def test_a_server_that_does_not_answer_is_given_up_for_direct_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fence_spawner, "_PID_TIMEOUT_S", 0.5)
    with serving_fences():
        up = await bash("exit 0", tmp_path)
        assert isinstance(up, ForkedFence) and await finished(up) == (0, "")
        server = server_pid()
        os.kill(server, signal.SIGSTOP)
        try:
            proc = await bash("echo direct; exit 3", tmp_path)
        finally:
            os.kill(server, signal.SIGCONT)
        # Started directly instead, and the server is not asked again.
        assert not isinstance(proc, ForkedFence)
        assert await finished(proc) == (3, "direct\n")
        later = await bash("exit 4", tmp_path)
        assert not isinstance(later, ForkedFence)
        assert await finished(later) == (4, "")


async def test_a_request_too_large_for_the_server_starts_directly(tmp_path: Path) -> None:
    with serving_fences():
        # 1 MiB of environment: more than the server takes, less than exec(2) does.
        big = {f"BIG{i}": "x" * (128 * 1024 - 16) for i in range(8)}
        proc = await bash('echo "${#BIG0} ${#BIG7}"', tmp_path, **big)
        assert not isinstance(proc, ForkedFence)
        assert await finished(proc) == (0, f"{128 * 1024 - 16} {128 * 1024 - 16}\n")
        # The server is still there for the next one.
        small = await bash("exit 0", tmp_path)
        assert isinstance(small, ForkedFence)
        assert await finished(small) == (0, "")
