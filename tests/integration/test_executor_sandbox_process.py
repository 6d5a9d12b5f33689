"""The executor's own process: non-dumpable, and credentials gone from its environment, from
/proc/<pid>/environ too, once stripped (real processes, inspected from outside; the same-uid
case runs both sides as `nobody`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

CHILD = """
import sys
from services.executor.sandbox import is_dumpable, make_non_dumpable, strip_secrets
removed = strip_secrets()
make_non_dumpable()
print(sorted(removed), is_dumpable(), flush=True)
sys.stdin.read()
"""


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_stripped_secrets_leave_proc_environ() -> None:
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": "postgresql://u:db-pw-3e1f@h/db",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-77aa",
        "SLUICE_SECRET_KEY": "sealing-key-5c9d",
        "SLUICE_KEEP_ME": "visible",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == (
            "['AWS_SECRET_ACCESS_KEY', 'SLUICE_DATABASE_URL', 'SLUICE_SECRET_KEY'] False"
        )
        environ = read_bytes(f"/proc/{proc.pid}/environ")
        assert b"db-pw-3e1f" not in environ
        assert b"s3-secret-77aa" not in environ
        assert b"sealing-key-5c9d" not in environ
        assert b"SLUICE_KEEP_ME=visible" in environ
    finally:
        proc.stdin.close()
        await proc.wait()


SAME_UID_CHILD = """
import os, sys
from services.executor.sandbox import _prctl, make_non_dumpable
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
_prctl(4, 1)  # PR_SET_DUMPABLE 1: as a process started by that user would be
print("open", flush=True)
sys.stdin.readline()
make_non_dumpable()
print("sealed", flush=True)
sys.stdin.read()
"""


def read_as_nobody(path: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["cat", path], user=65534, group=65534, extra_groups=[], capture_output=True, check=False
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run both processes as nobody")
async def test_a_non_dumpable_process_s_environ_is_closed_to_its_own_uid() -> None:
    env = {**os.environ, "SLUICE_DATABASE_URL": "postgresql://u:db-pw-same-uid@h/db"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SAME_UID_CHILD,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    path = f"/proc/{proc.pid}/environ"
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"open\n"
        before = await asyncio.to_thread(read_as_nobody, path)
        assert before.returncode == 0
        assert b"db-pw-same-uid" in before.stdout
        proc.stdin.write(b"go\n")
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"sealed\n"
        after = await asyncio.to_thread(read_as_nobody, path)
        assert after.returncode != 0
        assert b"Permission denied" in after.stderr
        assert b"db-pw-same-uid" not in after.stdout
    finally:
        proc.stdin.close()
        await proc.wait()
