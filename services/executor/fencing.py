"""The executor's side of per-attempt fences (see fence.py): deadlines and renewals.

Every node process of an attempt runs under a fence process that kills it when the deadline
passes. The deadline is `fence_after_s` after the last lease renewal the executor *sent* that
the database accepted (CLOCK_MONOTONIC, shared by every process of the host). The lease itself
expires `lease_s` after the database executed that renewal, which is later than it was sent, so
a node is dead at least `lease_s - fence_after_s` before any sweeper can re-queue its attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

FENCE_DIR = str(Path(__file__).parent)
# The fence is imported as a module rather than run as a script: a script is compiled from
# source at every start (~3 ms of CPU per node start), a module loads its cached bytecode. The
# directory goes at the END of sys.path, so no file next to fence.py can shadow the standard
# library.
_LOADER = (
    "import sys; sys.path.append(sys.argv.pop(1)); import fence; sys.exit(fence.main(sys.argv))"
)


def fence_margin_s(lease_s: float) -> float:
    """How long before the lease expires fences kill their nodes: one second (wake-up latency,
    the time SIGKILL takes, clock rate differences), more for long leases, at most half."""
    return min(max(1.0, lease_s / 10), lease_s / 2)


def fence_argv(
    command: list[str], deadline: float, grace_s: float, uid: int = -1, gid: int = -1
) -> list[str]:
    """The command line that runs `command` under a fence. `-S`: the fence needs no
    site-packages, which keeps its start-up to a few milliseconds."""
    return [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _LOADER,
        FENCE_DIR,
        repr(deadline),
        repr(grace_s),
        str(uid),
        str(gid),
        "--",
        *command,
    ]


class FenceLink:
    """One attempt's fence deadline and the control pipes of its running fences."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._pipes: set[asyncio.StreamWriter] = set()

    def attach(self, pipe: asyncio.StreamWriter) -> None:
        self._pipes.add(pipe)
        # A renewal that arrived while the fence was starting is not lost.
        self._send(pipe, f"D {self.deadline!r}\n")

    def detach(self, pipe: asyncio.StreamWriter) -> None:
        self._pipes.discard(pipe)

    def extend(self, deadline: float) -> None:
        """Move the deadline forward (never back) after a lease renewal."""
        if deadline <= self.deadline:
            return
        self.deadline = deadline
        for pipe in list(self._pipes):
            self._send(pipe, f"D {deadline!r}\n")

    def _send(self, pipe: asyncio.StreamWriter, line: str) -> None:
        if pipe.is_closing():
            self._pipes.discard(pipe)
            return
        # A few bytes into a pipe buffer: never blocks; a fence that exited is simply gone.
        with contextlib.suppress(OSError, RuntimeError):
            pipe.write(line.encode())


def stop_request(pipe: asyncio.StreamWriter) -> bool:
    """Ask a fence to stop its node gently (SIGTERM, then SIGKILL after the grace period)."""
    if pipe.is_closing():
        return False
    try:
        pipe.write(b"T\n")
    except (OSError, RuntimeError):
        return False
    return True
