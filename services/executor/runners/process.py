"""Node processes: one process group per attempt, output captured, the whole group killed.

The child starts in a new session (its own process group), so `killpg` reaches its children and
grandchildren however deep. Cancelling `run_process` (timeout, terminate, lost lease, shutdown)
sends SIGTERM to the group, then SIGKILL after the grace period. When the leader exits on its own,
whatever it left running in its group is killed too: an attempt leaves no processes behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal

from services.executor.logs import LogBuffer

_READ_SIZE = 64 * 1024
# After the group is killed, output still in the pipe is read for at most this long (a process
# that escaped the group with setsid could hold the pipe open forever).
_DRAIN_S = 1.0


@functools.cache
def _devnull() -> int:
    # Opened once: asyncio.subprocess.DEVNULL would open /dev/null again for every attempt.
    return os.open(os.devnull, os.O_RDONLY)


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


async def _stop_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        pass
    signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run_process(
    argv: list[str], *, env: dict[str, str], cwd: str, log: LogBuffer, grace_s: float
) -> int:
    """Run `argv` in its own process group with stdout+stderr into `log`; return its exit
    status (128 + N when killed by signal N)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=_devnull(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = asyncio.create_task(_pump(proc.stdout, log))
    try:
        returncode = await proc.wait()
    except BaseException:
        # Cancelled: the group must be dead before this attempt is reported over.
        await asyncio.shield(_stop_group(proc, grace_s))
        raise
    finally:
        signal_group(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN_S)
        except TimeoutError:
            reader.cancel()
    return exit_status(returncode)
