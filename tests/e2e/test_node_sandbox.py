"""Node sandbox with a real executor process: nodes that go looking for sluice's credentials
find none of them.

The executor runs with a database URL holding a password, a bootstrap token, platform S3 keys and
the key that seals connection secrets. When the tests run as root (as in CI containers) the executor
runs nodes as `nobody` (SLUICE_NODE_USER); otherwise nodes share the executor's uid and the executor
being non-dumpable is what keeps its /proc files closed. Each node tries every read in ATTEMPTS; its
log must hold none of the secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import enqueue, executor_process, flow, save, wait_instance
from tests.support.secrets import TEST_SECRET_KEY

Pool: TypeAlias = "asyncpg.Pool[Any]"

DB_PASSWORD = "db-pw-7c1e9a52"
BOOTSTRAP_TOKEN = "slc_boot-4f0d2b7e"
S3_SECRET = "platform-s3-secret-91ab3c"
S3_KEY_ID = "platform-s3-key-id-55e1"
# TEST_SECRET_KEY seals connection secrets: the executor gets it from executor_process.
SECRETS = (DB_PASSWORD, BOOTSTRAP_TOKEN, S3_SECRET, S3_KEY_ID, TEST_SECRET_KEY)

# Every read a node might try; `timeout` because a pipe among the executor's fds would block.
ATTEMPTS = {
    "env": "env",
    "parent environ": "tr '\\0' '\\n' < /proc/$PPID/environ",
    "pid 1 environ": "tr '\\0' '\\n' < /proc/1/environ",
    "every environ": "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done",
    "ps eww": "ps eww -A",
    "executor environ": "tr '\\0' '\\n' < /proc/$EXE/environ",
    "executor cmdline": "tr '\\0' '\\n' < /proc/$EXE/cmdline",
    "executor maps": "cat /proc/$EXE/maps",
    "executor mem": "timeout 5 head -c 1000000 /proc/$EXE/mem | strings",
    "executor fds": "ls -l /proc/$EXE/fd; for f in /proc/$EXE/fd/*; do timeout 2 cat $f; done",
    "executor cwd": "ls -la /proc/$EXE/cwd/",
    "executor log": "cat $EXECUTOR_LOG",
    "fence server environ": "tr '\\0' '\\n' < /proc/$SRV/environ",
    "fence server mem": "timeout 5 head -c 1000000 /proc/$SRV/mem | strings",
    "fence server fds": "ls -l /proc/$SRV/fd; for f in /proc/$SRV/fd/*; do timeout 2 cat $f; done",
    "own cwd and fds": "ls -la . /proc/$$/fd; for f in ./* /proc/$$/fd/*; do timeout 2 cat $f;done",
    "parent cmdline": "tr '\\0' '\\n' < /proc/$PPID/cmdline",
}


def probe_code(executor_log: Path) -> str:
    lines = [
        f"EXECUTOR_LOG={executor_log}",
        # The fence's parent is the executor's fence server, whose parent is the executor.
        "SRV=$(awk '{print $4}' /proc/$PPID/stat)",
        "EXE=$(awk '{print $4}' /proc/$SRV/stat)",
        'echo "uid $(id -u) executor $EXE server $SRV"',
    ]
    for name, command in ATTEMPTS.items():
        lines.append(f"echo '--- {name}'; ( {command} ) 2>&1 || true")
    return "\n".join(lines) + "\n"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def log_text(pool: Pool, instance_id: int, node: str) -> str:
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, DEFAULT_WS, instance_id, node, None)
    return "".join(text for _, text in chunks)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_nodes_cannot_read_the_executor_s_secrets(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    root = os.geteuid() == 0
    executor_log = tmp_path / "executor.log"
    nodes = [
        shell_node("probe", code=probe_code(executor_log), timeout_s=60),
        {"name": "py", "type": "python", "code": "print('python ran')"},
    ]
    version = await save(pool, flow("sandbox", nodes))
    [iid] = await enqueue(pool, version)
    env = {
        "SLUICE_DATABASE_URL": with_password(db_url, DB_PASSWORD),
        "SLUICE_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    if root:
        env["SLUICE_NODE_USER"] = "nobody"
    async with executor_process(db_url, executor_log, **env) as proc:
        await wait_instance(pool, iid)
        # Removed once read: not even root finds them in the executor's environment now.
        environ = read_bytes(f"/proc/{proc.pid}/environ")
        status = read_bytes(f"/proc/{proc.pid}/status").decode()
    probe = await log_text(pool, iid, "probe")
    for name in ATTEMPTS:
        assert f"--- {name}\n" in probe
    leaked = [s for s in SECRETS if s in probe]
    assert leaked == []
    assert not [s for s in SECRETS if s.encode() in environ]
    # The attempts really ran, and were refused rather than skipped.
    assert f"uid {65534 if root else os.geteuid()} executor {proc.pid} server " in probe
    assert "Permission denied" in probe
    if root:
        # The python node: the interpreter of this checkout is under a directory the node user
        # cannot enter; the node fails saying which one.
        python = await log_text(pool, iid, "py")
        assert "python ran" in python or (
            "sluice-fence: cannot run" in python and "is not accessible to it" in python
        )
    # The executor's own log holds none of them either.
    assert not [s for s in SECRETS if s in executor_log.read_text()]
    assert "Uid:" in status
