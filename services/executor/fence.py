"""The per-attempt fence: a small process between the executor and a node's process group.

Run as `python -I -S fence.py DEADLINE GRACE UID GID -- ARGV...`, or imported by the short
loader of fencing.py with the same arguments (standard library only, so it starts in
milliseconds and never imports sluice). It starts ARGV in a process group of its own
and kills that whole group, without any help from the executor, when:

- the lease deadline passes without a renewal: DEADLINE is a CLOCK_MONOTONIC time (shared by
  every process of the host); the executor moves it forward by writing `D <time>` lines to the
  fence's stdin after each successful lease renewal. A paused executor (SIGSTOP, VM freeze,
  blocked event loop) stops writing, and its nodes die before the database can treat the lease
  as expired (the executor sets DEADLINE a margin before the lease ends, see docs/fencing.md);
- the executor goes away: its end of the stdin pipe closes (EOF), and PR_SET_PDEATHSIG sends
  SIGHUP to the fence should that ever be missed;
- the executor asks for a stop (`T` on stdin, or SIGTERM): SIGTERM to the group, SIGKILL after
  GRACE seconds;
- the node's leader exits: whatever it left running is killed, so an attempt leaves nothing.

The fence is a child subreaper (PR_SET_CHILD_SUBREAPER): a node that daemonizes (double fork,
setsid) is re-parented to the fence rather than to PID 1, and is killed with the rest.

When UID/GID are not -1 (an executor running as root), the node runs as that user with no
supplementary groups. With `-- --pg-cancel` there is no node process: the fence watches a SQL
attempt's statement and sends PostgreSQL a cancel request for it in the same two cases.
The fence exits with the leader's status (128 + N when killed by signal N).
"""

from __future__ import annotations

# `ctypes` itself (enums, struct, the type zoo) costs milliseconds at every node start; the
# one libc call the fence needs is built from its C core directly.
import _ctypes

# The `signal` module wraps this one in enums, which costs milliseconds at every node start.
# typeshed has no stub for the private `_signal`, hence the ignore.
import _signal as signal  # type: ignore[import-not-found]
import os
import select
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_EXEC_FAILED = 127
# Signals received, recorded by the handler (which may run before the fence object exists).
_SIGNALS: set[int] = set()


def _note(message: str) -> None:
    # Into the attempt log (the fence's stderr is the node's output pipe).
    try:
        os.write(2, f"sluice-fence: {message}\n".encode())
    except OSError:
        pass


# typeshed declares _SimpleCData generic, but it is not subscriptable at run time.
class _CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class _CFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CInt


class _Libc:
    # RTLD_NOW | RTLD_GLOBAL on the running program: libc is already loaded. typeshed types the
    # name as str only; None (the running program) is what dlopen(3) documents for this.
    _handle = _ctypes.dlopen(None, os.RTLD_NOW | os.RTLD_GLOBAL)  # type: ignore[arg-type]


def _prctl(option: int, value: int) -> None:
    # A (name, library) pair: anything with a `_handle` serves as the library; typeshed asks for
    # a CDLL, which would mean importing the `ctypes` this module avoids.
    prctl = _CFunction(("prctl", _Libc()))  # type: ignore[arg-type]
    if prctl(option, value, 0, 0, 0) != 0:
        raise OSError(_ctypes.get_errno(), f"prctl({option}) failed")


def _unreadable_path(path: str) -> str | None:
    """The first directory on the way to `path` this user cannot search, or the file itself
    when it cannot be executed: the reason a node user cannot start an interpreter."""
    parts = os.path.realpath(path).split("/")[1:]
    current = ""
    for part in parts[:-1]:
        current += "/" + part
        if not os.access(current, os.X_OK):
            return current
    if not os.access(current + "/" + parts[-1], os.X_OK):
        return current + "/" + parts[-1]
    return None


def _resolve(program: str, env_path: str) -> str:
    if "/" in program:
        return program
    for folder in env_path.split(":"):
        candidate = os.path.join(folder or ".", program)
        if os.path.exists(candidate):
            return candidate
    return program


def _exec_child(argv: list[str], uid: int, gid: int) -> None:
    """In the forked child: own process group, default signals, stdin /dev/null, node user."""
    try:
        os.setpgid(0, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # The leader dies with the fence even if the fence itself is SIGKILLed.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if uid >= 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        os.execve(_resolve(argv[0], os.environ.get("PATH", os.defpath)), argv, os.environ)
    except OSError as exc:
        program = _resolve(argv[0], os.environ.get("PATH", os.defpath))
        blocked = _unreadable_path(program) if "/" in program else None
        who = f"user {os.getuid()}"
        real = os.path.realpath(program)
        shown = program if real == program else f"{program} ({real})"
        if blocked is not None:
            _note(f"cannot run {shown} as {who}: {blocked} is not accessible to it")
        else:
            _note(f"cannot run {program} as {who}: {exc.strerror}")
    os._exit(_EXEC_FAILED)


def _children() -> list[int]:
    """Direct children of this process, re-parented orphans included."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry))
    return found


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_everything(pgid: int) -> int | None:
    """SIGKILL the node's group and every descendant, then reap until none is left; return the
    leader's status if it was reaped here. Each round kills the current children (and their
    groups); their own children are then re-parented here and killed in the next round."""
    leader_status = None
    _signal_group(pgid, signal.SIGKILL)
    while True:
        for child in _children():
            try:
                _signal_group(os.getpgid(child), signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            return leader_status
        if pid == pgid:
            leader_status = _status(wait_status)


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _send_cancel_request(target: tuple[str, int, int]) -> None:
    """PostgreSQL's CancelRequest for backend `pid` (needs only its cancel key, no login):
    the statement it runs is cancelled even though its client is paused or dead."""
    # Imported here: only statement fences need them, and every import slows a node's start.
    import socket
    import struct

    address, pid, secret = target
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(address[5:])
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    with sock:
        sock.sendall(struct.pack("!iiii", 16, 80877102, pid, secret))
        # The server closes the connection once it has handled the request.
        try:
            sock.recv(1)
        except OSError:
            pass


class _Fence:
    def __init__(self, leader: int | None, deadline: float, grace_s: float) -> None:
        self.leader = leader or 0
        self.deadline = deadline
        self.grace_s = grace_s
        self.status: int | None = None
        # `C <address> <pid> <secret>`: the database statement to cancel (SQL attempts).
        self.cancel_target: tuple[str, int, int] | None = None
        self.poll = select.poll()
        self.poll.register(0, select.POLLIN)
        self.pidfd = os.pidfd_open(leader) if leader else -1
        if leader:
            self.poll.register(self.pidfd, select.POLLIN)
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poll.register(self.wakeup_r, select.POLLIN)
        signal.set_wakeup_fd(wakeup_w)
        self.buffer = b""

    def reap_leader(self) -> bool:
        if self.status is not None:
            return True
        try:
            pid, wait_status = os.waitpid(self.leader, os.WNOHANG)
        except ChildProcessError:
            self.status = _EXEC_FAILED
            return True
        if pid == 0:
            return False
        self.status = _status(wait_status)
        return True

    def read_control(self) -> str | None:
        """Apply everything waiting in the control pipe; return 'gone' on EOF, 'stop' on a
        stop request, else None."""
        while True:
            try:
                data = os.read(0, 4096)
            except BlockingIOError:
                return None
            if not data:
                return "gone"
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"D "):
                    try:
                        self.deadline = float(line[2:])
                    except ValueError:
                        pass
                elif line.strip() == b"T":
                    return "stop"
                elif line.startswith(b"C "):
                    try:
                        address, pid, secret = line[2:].decode().split()
                        self.cancel_target = (address, int(pid), int(secret))
                    except ValueError:
                        pass

    def take_signals(self) -> str | None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        if signal.SIGHUP in _SIGNALS:
            return "gone"
        if signal.SIGTERM in _SIGNALS:
            return "stop"
        return None

    def wait(self) -> str:
        """Block until something ends the attempt; return what."""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                # A fence that started late (a loaded host) may find its deadline passed before
                # it read its control pipe: a renewal waiting there moves the deadline, and a
                # statement's cancel key must be known before the deadline is acted on.
                what = self.read_control()
                if what:
                    return what
                if self.deadline <= time.monotonic():
                    return "deadline"
                continue
            for fd, _ in self.poll.poll(min(left, 3600.0) * 1000):
                if fd == self.pidfd and self.reap_leader():
                    return "exited"
                if fd == 0:
                    what = self.read_control()
                    if what:
                        return what
                if fd == self.wakeup_r:
                    what = self.take_signals()
                    if what:
                        return what

    def stop_gently(self) -> None:
        _signal_group(self.leader, signal.SIGTERM)
        end = time.monotonic() + self.grace_s
        while not self.reap_leader():
            left = end - time.monotonic()
            if left <= 0:
                return
            select.select([self.pidfd], [], [], left)


def main(argv: list[str]) -> int:
    if len(argv) < 7 or argv[5] != "--":
        _note("usage: fence.py DEADLINE GRACE UID GID -- ARGV...")
        return 2
    deadline, grace_s = float(argv[1]), float(argv[2])
    uid, gid = int(argv[3]), int(argv[4])
    command = argv[6:]
    watch_statement = command == ["--pg-cancel"]

    def remember(signum: int, _frame: object) -> None:
        _SIGNALS.add(signum)

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGHUP, remember)
    # Ctrl-C in a terminal reaches the executor, which stops its attempts itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
    os.set_blocking(0, False)
    if watch_statement:
        # Even if the executor is already gone: its cancel key is in the pipe, then EOF.
        return _watch_statement(deadline)
    if os.getppid() == 1:
        return 129  # SIGHUP: the executor died before the fence was armed; start nothing

    leader = os.fork()
    if leader == 0:
        _exec_child(command, uid, gid)
    try:
        os.setpgid(leader, leader)
    except (PermissionError, ProcessLookupError):
        pass  # the child already did it, or already exec'd
    fence = _Fence(leader, deadline, grace_s)
    what = fence.wait()
    if what == "deadline":
        _note("lease deadline passed without renewal; killing the process group")
    elif what == "gone":
        _note("executor gone; killing the process group")
    elif what == "stop":
        fence.stop_gently()
    reaped = _kill_everything(leader)
    if fence.status is None:
        fence.status = reaped
    return fence.status if fence.status is not None else 128 + signal.SIGKILL


def _watch_statement(deadline: float) -> int:
    """`-- --pg-cancel`: no node process; fence a SQL attempt's statement instead. The executor
    writes `C <address> <pid> <secret>` first; on a passed deadline or the executor's death the
    statement is cancelled on the server. `T` (the attempt ended) exits quietly."""
    fence = _Fence(None, deadline, 0.0)
    what = fence.wait()
    if fence.cancel_target is None and what == "gone":
        # SIGHUP can arrive before the pipe was read; the cancel key may still be waiting in it.
        fence.read_control()
    if what in ("deadline", "gone") and fence.cancel_target is not None:
        why = "lease deadline passed without renewal" if what == "deadline" else "executor gone"
        try:
            _send_cancel_request(fence.cancel_target)
        except OSError as exc:
            _note(f"{why}; could not cancel the SQL statement: {exc}")
            return 1
        _note(f"{why}; SQL statement of backend {fence.cancel_target[1]} cancelled")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
