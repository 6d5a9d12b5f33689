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


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_tour() -> tuple[list[str], dict[str, list[str]]]:
    """The tour's commands (README's first bash block after "Five-minute tour", comments and the
    export line left out) and what README says each prints (`$ command` → its lines)."""
    text = README.read_text().split("## Five-minute tour", 1)[1].split("\n## ", 1)[0]
    bash = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [
        line for line in bash.splitlines() if line.strip() and not line.startswith(("#", "export "))
    ]
    shown: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.split("```console\n", 1)[1].split("```", 1)[0].splitlines():
        if line.startswith("$ "):
            current = shown.setdefault(line[2:], [])
        else:
            current.append(line)
    return commands, shown


def test_readme_tour_parses() -> None:
    commands, shown = readme_tour()
    assert any(" produce " in c for c in commands) and any(" upload " in c for c in commands)
    assert set(shown) <= set(commands), "README shows output of a command its tour does not run"


async def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    """The README's tour, command by command, against a fresh `sluice dev`: every command exits 0
    and prints what README says it prints (ids, offsets, dates and timings aside)."""
    commands, shown = readme_tour()
    async with dev_process(tmp_path) as (proc, lines):
        exports, _ = printed_commands(await read_banner(proc, lines))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}, **exports}
        outputs: dict[str, str] = {}
        for line in commands:
            runnable = line.replace(".venv/bin/sluice", shlex.quote(SLUICE))
            if " logs " in line:
                # The Kafka-started run may still be running; read its log once it has one, as a
                # person re-running the command would.
                async with asyncio.timeout(RUN_S):
                    while True:
                        try:
                            outputs[line] = await sh(["bash", "-c", runnable], env, tmp_path)
                            break
                        except AssertionError:
                            await asyncio.sleep(0.5)
            else:
                outputs[line] = await sh(["bash", "-c", runnable], env, tmp_path)
        for line, expected in shown.items():
            got = outputs[line].splitlines()
            if " instances" in line or " events" in line:
                # Tables: the same header, and a row for each row README shows.
                assert got[0].split() == expected[0].split(), (line, got)
                assert len(got) >= len(expected), (line, got, expected)
            elif " logs " in line:
                assert got[0] == expected[0], (line, got)
            else:
                assert got[-1].split()[-1] == expected[-1].split()[-1], (line, got, expected)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0


async def test_a_new_message_after_a_restart_of_sluice_dev_starts_a_run(tmp_path: Path) -> None:
    """The embedded broker keeps its log in memory: after Ctrl-C and a new `sluice dev` the
    topic's offsets start at 0 again, while the database remembers the first run's events. A new
    message at a reused offset is a new record and must start a run, not be a `duplicate`."""
    for started in (1, 2):
        async with dev_process(tmp_path) as (proc, lines):
            exports, commands = printed_commands(await read_banner(proc, lines))
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")},
                **exports,
            }
            [produce] = [c for c in commands if " produce user-behavior-topic " in c]
            # As printed, on one partition: both records then sit at the same offset.
            await sh(["bash", "-c", f"{produce} --partition 0"], env, tmp_path)
            runs: list[dict[str, Any]] = []
            async with asyncio.timeout(RUN_S):
                while len(runs) < started:
                    listing = json.loads(await sh([SLUICE, "instances", "--json"], env, tmp_path))
                    runs = [
                        i
                        for i in listing
                        if i["workflow"] == "user_behavior_workflow" and i["state"] == "succeeded"
                    ]
                    await asyncio.sleep(0.5)  # polling the API as a person would, not a race
            events = json.loads(await sh([SLUICE, "events", "--json"], env, tmp_path))
            kafka = [e for e in events if e["source"] == "kafka"]
            assert len(kafka) == started
            assert "duplicate" not in json.dumps(kafka), kafka
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                assert await proc.wait() == 0
    # Both messages sat at offset 0 of partition 0, one broker lifetime apart.
    assert {e["ref"] for e in kafka} == {"user-behavior-topic/0/0"}
