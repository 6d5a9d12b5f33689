"""What keeps node code away from sluice's own credentials (DESIGN.md 14, docs/node-sandbox.md).

- Node processes get a scrubbed environment (runners/base.py) and run under a fence.
- The executor process is non-dumpable: /proc/<executor>/{environ,cmdline,mem,maps,fd...} are
  then owned by root, so a node of the same uid cannot read them (nor ptrace the executor).
- Secrets are removed from the process environment once the settings have been read, both from
  `os.environ` (and the C environment) and from the original environment block that
  /proc/<pid>/environ shows, so nothing started later inherits them and root cannot read them
  there either.
- An executor running as root runs nodes as `SLUICE_NODE_USER`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
from collections.abc import MutableMapping
from dataclasses import dataclass

from shared.settings import SettingsError

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3

# Variables sluice reads credentials from; none is needed after the settings were loaded.
SECRET_VARIABLES = (
    "SLUICE_SECRET_KEY",
    "SLUICE_DATABASE_URL",
    "SLUICE_BOOTSTRAP_TOKEN",
    "SLUICE_WEBHOOK_TOKENS",
    "SLUICE_KAFKA_SASL_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
)


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.prctl(option, value, 0, 0, 0))
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def make_non_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): this process's /proc files become root's, no core dumps,
    no ptrace by the same uid. Children reset it when they exec."""
    _prctl(_PR_SET_DUMPABLE, 0)


def is_dumpable() -> bool:
    return _prctl(_PR_GET_DUMPABLE) != 0


def _environ_block() -> tuple[int, int]:
    """Start and end address of the environment block the kernel shows in /proc/self/environ."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 50 and 51 of proc(5) (env_start, env_end); `fields` starts at field 3.
    return int(fields[47]), int(fields[48])


def _blank_original_environ(names: set[str]) -> None:
    """Overwrite `NAME=value` entries of the original environment block with NUL bytes.

    unsetenv only unlinks a variable from the C environment array; the bytes stay on the stack,
    where /proc/<pid>/environ still shows them. A process may write its own memory through
    /proc/self/mem; the entries are no longer referenced once unset.
    """
    start, end = _environ_block()
    if end <= start:
        return
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        block = mem.read(end - start)
        offset = 0
        for entry in block.split(b"\0"):
            name = entry.split(b"=", 1)[0].decode(errors="replace")
            if name in names:
                mem.seek(start + offset)
                mem.write(b"\0" * len(entry))
            offset += len(entry) + 1


def strip_secrets(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the credential variables from this process's environment; return their names.

    Call it once every setting has been read: in `sluice dev` all services share this process
    and were given their settings before any of them starts, so none reads them again.
    """
    env = os.environ if environ is None else environ
    removed = [name for name in SECRET_VARIABLES if name in env]
    for name in removed:
        del env[name]
    if environ is None and removed:
        # Not fatal where /proc/self/mem is not writable: the variables are still unset.
        with contextlib.suppress(OSError, ValueError, IndexError):
            _blank_original_environ(set(removed))
    return removed


@dataclass(frozen=True)
class NodeUser:
    """The unprivileged user node processes run as."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def ids(self) -> tuple[int, int]:
        return self.uid, self.gid


def node_user(name: str | None, euid: int | None = None) -> NodeUser | None:
    """The user nodes run as: `SLUICE_NODE_USER` when this process is root, else None (nodes
    run as the executor's own, unprivileged, uid and cannot change it)."""
    if (os.geteuid() if euid is None else euid) != 0 or not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SettingsError(
            f"invalid configuration: SLUICE_NODE_USER: no user named {name!r} on this host"
        ) from None
    if entry.pw_uid == 0:
        raise SettingsError("invalid configuration: SLUICE_NODE_USER: must not be root")
    return NodeUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
