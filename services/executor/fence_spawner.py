"""Starting fenced processes through a warm fence server (fence_server.py).

A fence started as a new Python interpreter costs ~9 ms of CPU before it starts its node; one
forked from a server that has already started costs about a millisecond. The server is started
once per event loop, on first use, as a child of this executor; a request that cannot go through
it (the server died, the request is too large) starts the fence directly as before
(`fence_argv`), so the spawner only ever makes starting cheaper, never impossible.

`spawn_fenced` returns an object with what the runners use of `asyncio.subprocess.Process`:
`pid` (also the fence's process group), `stdin` (the control pipe), `stdout`, `wait()`,
`returncode` and `kill()`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog

from services.executor.fencing import FENCE_DIR, fence_argv

log = structlog.get_logger("sluice.executor")

_SERVER_LOADER = (
    "import sys; sys.path.append(sys.argv.pop(1)); import fence_server; "
    "sys.exit(fence_server.main(int(sys.argv[1])))"
)
_SEND_BUFFER = 1024 * 1024
# A node's environment is small (large parameter values go through files); a request larger
# than this (the server reads up to 4 MiB) is started directly rather than risk EMSGSIZE.
MAX_REQUEST = 256 * 1024
# The forked fence writes its pid at once; a server that does not answer this fast is treated
# as broken and the fence is started directly.
_PID_TIMEOUT_S = 10.0


class SpawnFailed(Exception):
    """The server could not start this fence; the caller starts it directly."""


@dataclass
class ForkedFence:
    """A fence forked by the server: its pid, control pipe, output and exit status."""

    pid: int
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader | None
    _status: asyncio.StreamReader
    returncode: int | None = None
    _waiting: asyncio.Task[int] | None = field(default=None, repr=False)

    async def wait(self) -> int:
        if self._waiting is None:
            self._waiting = asyncio.ensure_future(self._read_status())
        return await asyncio.shield(self._waiting)

    async def _read_status(self) -> int:
        code: int | None = None
        while line := await self._status.readline():
            if line.startswith(b"X "):
                with contextlib.suppress(ValueError):
                    code = int(line[2:])
        # No status: the fence was killed (SIGKILL is all that can stop it without a word).
        self.returncode = code if code is not None else -signal.SIGKILL
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


async def _write_pipe(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop), os.fdopen(fd, "wb", 0)
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)


async def _read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    """A reader of the pipe, and its transport (which closes itself at EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    return reader, transport


class FenceServer:
    """One warm fence server, a child of this process."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.broken = False

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        try:
            # Its end of the socket is the only descriptor it inherits besides 0-2; its
            # environment is empty of anything of this executor's (each request carries one).
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SERVER_LOADER, FENCE_DIR, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        return ours

    async def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        deadline: float,
        grace_s: float,
        uid: int,
        gid: int,
        output: bool,
    ) -> ForkedFence:
        if self.broken:
            raise SpawnFailed("the fence server is gone")
        sock = self._sock or self._start()
        request = json.dumps(
            {
                "argv": argv,
                "env": env,
                "cwd": cwd,
                "deadline": deadline,
                "grace_s": grace_s,
                "uid": uid,
                "gid": gid,
            }
        ).encode()
        if len(request) > MAX_REQUEST:
            raise SpawnFailed(f"request of {len(request)} bytes")
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        if output:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
        else:
            # Its notes go where this executor's own output goes, as a direct child's would.
            out_r, out_w = -1, os.dup(2)
        theirs = [control_r, out_w, status_w]
        try:
            fds = array.array("i", theirs)
            sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            for fd in (control_w, status_r, out_r, *theirs):
                if fd >= 0:
                    os.close(fd)
            if not isinstance(exc, BlockingIOError) and exc.errno != errno.EMSGSIZE:
                self.broken = True
            raise SpawnFailed(str(exc)) from None
        for fd in theirs:
            os.close(fd)
        stdin = await _write_pipe(control_w)
        status, status_pipe = await _read_pipe(status_r)
        stdout, stdout_pipe = await _read_pipe(out_r) if out_r >= 0 else (None, None)
        try:
            first = await asyncio.wait_for(status.readline(), _PID_TIMEOUT_S)
        except TimeoutError:
            first = b""
        if not first.startswith(b"P "):
            # The server died or could not fork. A fence it forks after all finds its control
            # pipe closed and kills its node at once.
            self.broken = True
            stdin.close()
            status_pipe.close()
            if stdout_pipe is not None:
                stdout_pipe.close()
            raise SpawnFailed("the fence server did not start the fence")
        return ForkedFence(int(first[2:]), stdin, stdout, status)

    def close(self) -> None:
        """Close the socket: the server sees EOF and exits, and fences still running kill their
        nodes (their parent died); callers close it once their attempts are over."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_SERVERS: dict[asyncio.AbstractEventLoop, tuple[FenceServer, int]] = {}


@contextlib.contextmanager
def serving_fences() -> Iterator[None]:
    """While open, fences started on this event loop are forked by a warm server (started on
    first use); outside, each fence is started directly. Executors sharing a loop share one
    server, stopped when the last of them leaves: a fence dies with its server
    (PR_SET_PDEATHSIG), so the server must outlive every attempt started through it."""
    loop = asyncio.get_running_loop()
    server, users = _SERVERS.get(loop, (FenceServer(), 0))
    _SERVERS[loop] = (server, users + 1)
    try:
        yield
    finally:
        server, users = _SERVERS[loop]
        if users > 1:
            _SERVERS[loop] = (server, users - 1)
        else:
            del _SERVERS[loop]
            server.close()


async def spawn_fenced(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    deadline: float,
    grace_s: float,
    uid: int = -1,
    gid: int = -1,
    output: bool = True,
) -> ForkedFence | asyncio.subprocess.Process:
    """Start `argv` under a fence (fence.py) in a session of its own, with its stdout and
    stderr on one pipe (`output`; else this process's stderr) and the control pipe as `stdin`."""
    server, _ = _SERVERS.get(asyncio.get_running_loop(), (None, 0))
    if server is not None and not server.broken:
        try:
            return await server.spawn(
                argv,
                env=env,
                cwd=cwd,
                deadline=deadline,
                grace_s=grace_s,
                uid=uid,
                gid=gid,
                output=output,
            )
        except SpawnFailed as exc:
            if server.broken:
                log.warning("fence_server_unavailable", error=str(exc))
    return await asyncio.create_subprocess_exec(
        *fence_argv(argv, deadline, grace_s, uid, gid),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE if output else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.STDOUT if output else None,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
