"""`sluice dev` as a newcomer runs it: start, paste the printed commands, read the logs, Ctrl-C.

Everything is real: the command starts embedded PostgreSQL, a Kafka-protocol broker and an S3+SQS
endpoint, loads `examples/`, and the commands it prints are run as printed (with this test's
`sluice` executable). Afterwards no process it started may be left.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from services.dev.servers.process import free_port

SLUICE = str(Path(sys.executable).with_name("sluice"))
READY_S = 150.0
RUN_S = 60.0
pytestmark = pytest.mark.timeout(400)


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whichever process adopted it."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@asynccontextmanager
async def dev_process(cwd: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(
        {
            "SLUICE_DEV_KAFKA_PORT": str(free_port()),
            "SLUICE_DEV_S3_PORT": str(free_port()),
            "SLUICE_API_PORT": str(free_port()),
            "SLUICE_WEBHOOK_PORT": str(free_port()),
            "SLUICE_METRICS_PORT": str(free_port()),
            "SLUICE_LOG_FORMAT": "json",
        }
    )
    log = (cwd / "dev.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "dev",
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    lines: list[str] = []
    try:
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def read_banner(proc: asyncio.subprocess.Process, lines: list[str]) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(READY_S):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"sluice dev exited before ready: {lines[-20:]}")
            lines.append(raw.decode())
            if raw.startswith(b"Ctrl-C stops everything"):
                return "".join(lines)


async def sh(command: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=str(cwd),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_S)
    assert proc.returncode == 0, f"{command} -> {proc.returncode}: {out.decode()}"
    return out.decode()


def printed_commands(banner: str) -> tuple[dict[str, str], list[str]]:
    """The export line and the runnable command lines of the banner (placeholders skipped)."""
    exports: dict[str, str] = {}
    commands: list[str] = []
    for line in banner.splitlines():
        line = line.strip()
        if line.startswith("export "):
            for item in shlex.split(line)[1:]:
                key, _, value = item.partition("=")
                exports[key] = value
        elif line.startswith((".venv/bin/sluice", "echo ")) and "<" not in line:
            commands.append(line.replace(".venv/bin/sluice", shlex.quote(SLUICE)))
    return exports, commands


async def test_sluice_dev_runs_each_example_from_the_printed_commands(tmp_path: Path) -> None:
    async with dev_process(tmp_path) as (proc, lines):
        banner = await read_banner(proc, lines)
        exports, commands = printed_commands(banner)
        assert {
            "SLUICE_API_URL",
            "SLUICE_TOKEN",
            "SLUICE_KAFKA_BOOTSTRAP",
            "SLUICE_S3_ENDPOINT",
        } <= set(exports)
        children = psutil.Process(proc.pid).children(recursive=True)
        pg_pid = int((tmp_path / ".sluice" / "pg" / "postmaster.pid").read_text().split()[0])
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}, **exports}
        for line in commands:
            await sh(["bash", "-c", line], env, tmp_path)

        listing: list[dict[str, Any]] = []
        async with asyncio.timeout(RUN_S):
            while True:
                listing = json.loads(await sh([SLUICE, "instances", "--json"], env, tmp_path))
                if len([i for i in listing if i["state"] == "succeeded"]) >= 3:
                    break
                await asyncio.sleep(0.5)  # polling the API as a person would, not a race
        by_workflow = {i["workflow"]: i for i in listing}
        expected = {
            "user_behavior_workflow": ("handle_user_action", "login: user 1001"),
            "process_oss_file_workflow": ("print_path", "A new file has arrived: input/a.csv"),
            "hello_trigger_workflow": ("hello", "Hello, Trigger Workflow! Current time is "),
        }
        for workflow, (node, text) in expected.items():
            instance = by_workflow[workflow]
            assert instance["state"] == "succeeded"
            log = await sh([SLUICE, "logs", str(instance["id"]), node], env, tmp_path)
            assert text in log

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            code = await proc.wait()
        assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
    left = [c.pid for c in children if alive(c.pid)]
    assert left == [], f"processes left behind: {left}"
    assert not alive(pg_pid), "the embedded PostgreSQL is still running"


def test_printed_commands_parse() -> None:
    banner = (
        "  export SLUICE_API_URL=http://x SLUICE_TOKEN=t\n"
        "  .venv/bin/sluice produce topic '{\"a\": 1}'\n"
        "  .venv/bin/sluice logs <INSTANCE_ID> <NODE> --follow\n"
        "  echo 'id,name' > /tmp/a.csv && .venv/bin/sluice upload /tmp/a.csv s3://d/k\n"
    )
    exports, commands = printed_commands(banner)
    assert exports == {"SLUICE_API_URL": "http://x", "SLUICE_TOKEN": "t"}
    assert len(commands) == 2
    assert commands[0].endswith("produce topic '{\"a\": 1}'")
    assert commands[1].startswith("echo 'id,name' > /tmp/a.csv && ")
