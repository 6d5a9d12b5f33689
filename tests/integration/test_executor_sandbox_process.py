"""The executor's own process: non-dumpable, and credentials gone from its environment, from
/proc/<pid>/environ too, once stripped (a real process, inspected from outside)."""

from __future__ import annotations

import asyncio
import os
import sys

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


async def test_stripped_secrets_leave_proc_environ_and_the_process_is_not_dumpable() -> None:
    env = {
        **os.environ,
        "SLUICE_DATABASE_URL": "postgresql://u:db-pw-3e1f@h/db",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-77aa",
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
        assert line.decode().strip() == "['AWS_SECRET_ACCESS_KEY', 'SLUICE_DATABASE_URL'] False"
        environ = read_bytes(f"/proc/{proc.pid}/environ")
        assert b"db-pw-3e1f" not in environ
        assert b"s3-secret-77aa" not in environ
        assert b"SLUICE_KEEP_ME=visible" in environ
        # Non-dumpable: the kernel hands its /proc files to root.
        assert os.stat(f"/proc/{proc.pid}/environ").st_uid == 0
    finally:
        proc.stdin.close()
        await proc.wait()
