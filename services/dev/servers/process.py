"""Child-process plumbing shared by the embedded servers (Kafka, S3, Ceph)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

_LOG_TAIL_BYTES = 4000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes a child receive SIGKILL when its parent thread ends (Linux).

    libc is resolved before the fork: loading a library between fork and exec is not safe in a
    multi-threaded parent. The kernel ties the signal to the thread that forked, so start servers
    from a thread that lives as long as they should (the event loop's thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def log_tail(path: Path | None, limit: int = _LOG_TAIL_BYTES) -> str:
    """The end of a log file, for error messages."""
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()[-limit:]
    return data.decode("utf-8", "replace")


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal a child's process group (the child is not reaped yet, so the id is still its)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout_s`, reap it."""
    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()


class ChildServer:
    """Context-manager plumbing of an embedded server: `with` and `async with` start and stop it.

    Subclasses provide `start()` and `stop()`, and an `__aenter__` that launches the process on
    the event loop's thread (see `die_with_parent`) while waiting for readiness off it.
    """

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
