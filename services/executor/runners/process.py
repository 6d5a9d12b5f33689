"""Node processes: one fence and one process group per attempt, output captured, all killed.

The node runs under a fence process (fence.py) in a session of its own; the fence starts the
node in its own process group and is a subreaper, so it reaches children and grandchildren
however deep, daemonized ones included. Cancelling `run_process` (timeout, terminate, lost
lease, shutdown) asks the fence to SIGTERM the group, then SIGKILL it after the grace period.
When the leader exits on its own, whatever it left running is killed too: an attempt leaves no
processes behind. The fence also kills everything by itself when its lease deadline passes
without a renewal or when this executor dies (see fencing.py, docs/fencing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from services.executor.fence_spawner import ForkedFence, spawn_fenced
from services.executor.fencing import FenceLink, stop_request
from services.executor.logs import LogBuffer

_READ_SIZE = 64 * 1024
# After the group is killed, output still in the pipe is read for at most this long (a process
# that escaped the group with setsid could hold the pipe open forever).
_DRAIN_S = 1.0
# A fence that has not ended its node this long after the grace period is SIGKILLed (its node's
# leader dies with it: PR_SET_PDEATHSIG).
_FENCE_SLACK_S = 5.0
# Without a lease (tests, tools) the fence still kills its node when the executor dies.
_NO_DEADLINE_S = 10 * 365 * 86400.0


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_status(returncode: int) -> int:
    """Shell convention: a process killed by signal N exits with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


async def _pump(stream: asyncio.StreamReader, log: LogBuffer) -> None:
    while True:
        data = await stream.read(_READ_SIZE)
        if not data:
            return
        log.feed(data)


async def _stop_fenced(proc: ForkedFence | asyncio.subprocess.Process, grace_s: float) -> None:
    assert proc.stdin is not None
    if not stop_request(proc.stdin):
        signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s + _FENCE_SLACK_S)
    except TimeoutError:
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run_process(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    log: LogBuffer,
    grace_s: float,
    fence: FenceLink | None = None,
    user: tuple[int, int] | None = None,
) -> int:
    """Run `argv` under a fence, in its own process group, with stdout+stderr into `log` (as
    `user` (uid, gid) when given); return its exit status (128 + N when killed by signal N)."""
    link = fence or FenceLink(time.monotonic() + _NO_DEADLINE_S)
    uid, gid = user or (-1, -1)
    proc = await spawn_fenced(
        argv, env=env, cwd=cwd, deadline=link.deadline, grace_s=grace_s, uid=uid, gid=gid
    )
    assert proc.stdout is not None and proc.stdin is not None
    link.attach(proc.stdin)
    reader = asyncio.create_task(_pump(proc.stdout, log))
    try:
        returncode = await proc.wait()
    except BaseException:
        # Cancelled: the group must be dead before this attempt is reported over.
        await asyncio.shield(_stop_fenced(proc, grace_s))
        raise
    finally:
        link.detach(proc.stdin)
        proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN_S)
        except TimeoutError:
            reader.cancel()
    return exit_status(returncode)
