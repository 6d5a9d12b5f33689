"""A warm fence parent: forks one fence (fence.py) per attempt instead of starting a Python
interpreter for each (docs/fencing.md, "Cost").

Run as `python -I -S -c LOADER DIR FD` by the executor (fence_spawner.py), FD being its end of
a SOCK_SEQPACKET socket; standard library only, like fence.py. Each message on the socket is one
request: a JSON object {"argv", "env", "cwd", "deadline", "grace_s", "uid", "gid"} with three
file descriptors attached (SCM_RIGHTS): the fence's control pipe (its stdin: renewals `D`, stop
`T`, cancel key `C`), the node's output (its stdout and stderr: a pipe, or /dev/null) and a
status pipe. The forked fence writes `P <pid>` to the status pipe
at once and `X <status>` when it ends; a fence that is killed writes nothing more, and its
status pipe simply closes.

The fences keep every guarantee of a directly started one: each is a session and process group
of its own, a subreaper, and kills its node when its deadline passes, its control pipe closes
(the executor died) or this server dies (PR_SET_PDEATHSIG). The server itself dies with the
executor (PR_SET_PDEATHSIG) and when the socket closes, and is non-dumpable: it holds the
environments of nodes of every workspace for the moment it forks them.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # see fence.py
import array
import json
import os
import socket
import sys

import fence  # type: ignore[import-not-found]  # the module beside this one, on sys.path

_STATUS_FD = 3
_PR_SET_DUMPABLE = 4
_MAX_MESSAGE = 4 * 1024 * 1024
_FDS = 3


def _receive(sock: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """One request, or None when the executor closed the socket."""
    fds = array.array("i")
    data, ancillary, _flags, _addr = sock.recvmsg(
        _MAX_MESSAGE, socket.CMSG_LEN(_FDS * fds.itemsize)
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), list(fds)


def _run_fence(sock: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the attempt's fence, as `python fence.py` would be."""
    code = 70
    try:
        control, output, status = fds
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        os.dup2(control, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.dup2(status, _STATUS_FD)
        # The fence keeps it; the node it execs must not see it (nor forge its status there).
        os.set_inheritable(_STATUS_FD, False)
        for fd in {control, output, status} - {0, 1, 2, _STATUS_FD}:
            os.close(fd)
        os.write(_STATUS_FD, f"P {os.getpid()}\n".encode())
        os.chdir(str(request["cwd"]))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        argv = request["argv"]
        assert isinstance(argv, list)
        code = fence.main(
            [
                "fence",
                repr(request["deadline"]),
                repr(request["grace_s"]),
                str(request["uid"]),
                str(request["gid"]),
                "--",
                *[str(a) for a in argv],
            ]
        )
    except BaseException as exc:
        # Whatever happens, the forked child must never return into the server's loop.
        try:
            os.write(2, f"sluice-fence: could not start: {exc!r}\n".encode())
        except OSError:
            pass
    try:
        os.write(_STATUS_FD, f"X {code}\n".encode())
    except OSError:
        pass
    os._exit(code)


def serve(sock: socket.socket) -> int:
    # Forked fences are reaped by the kernel: their statuses travel through their status pipes.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Ctrl-C in a terminal reaches the executor, which stops its attempts itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fence._prctl(fence._PR_SET_PDEATHSIG, signal.SIGKILL)
    fence._prctl(_PR_SET_DUMPABLE, 0)
    if os.getppid() == 1:
        return 0  # the executor died before the server was armed
    while True:
        received = _receive(sock)
        if received is None:
            return 0
        request, fds = received
        if len(fds) != _FDS:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            _run_fence(sock, request, fds)
        for fd in fds:
            os.close(fd)


def main(sock_fd: int) -> int:
    return serve(socket.socket(fileno=sock_fd))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
