"""Ctrl-C on `sluice dev` while a node runs: it says what it waits for, for how long, and a
second Ctrl-C stops at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_dev import SLUICE, dev_process, printed_commands, read_banner, sh

pytestmark = pytest.mark.timeout(400)
SLOW = {
    "name": "slow",
    "type": "manual",
    "nodes": [{"name": "nap", "type": "shell", "code": "sleep 300"}],
}


def pg_socket_dir(cwd: Path) -> Path:
    """Where `sluice dev` started in `cwd` keeps its PostgreSQL socket (symlinks resolved)."""
    return cwd.resolve() / ".sluice" / "pg"


async def test_ctrl_c_names_the_running_node_and_a_second_one_stops_at_once(
    tmp_path: Path,
) -> None:
    async with dev_process(tmp_path) as (proc, lines):
        banner = await read_banner(proc, lines)
        # How to reach the embedded servers, for connections of one's own.
        socket_dir = pg_socket_dir(tmp_path)
        assert f"psql -h {socket_dir} -U postgres sluice_examples" in banner
        assert "access key sluice, secret sluice-dev-secret, region us-east-1" in banner
        exports, _ = printed_commands(banner)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}, **exports}
        (tmp_path / "slow.json").write_text(json.dumps(SLOW))
        await sh([SLUICE, "apply", "-f", "slow.json"], env, tmp_path)
        started = await sh([SLUICE, "run-workflow", "slow", "--json"], env, tmp_path)
        iid = json.loads(started)["instance_id"]
        async with asyncio.timeout(60):
            while True:
                shown = json.loads(
                    await sh([SLUICE, "instance", str(iid), "--json"], env, tmp_path)
                )
                if shown["nodes"][0]["state"] == "running":
                    break
                await asyncio.sleep(0.3)  # polling the API as a person would

        proc.send_signal(signal.SIGINT)
        log = tmp_path / "dev.log"
        expected = (
            f"stopping: waiting up to 30s for 1 running node(s) to finish (instance/node: "
            f"{iid}/nap); press Ctrl-C again to stop at once"
        )
        async with asyncio.timeout(30):
            while True:
                if expected in log.read_text():
                    break
                await asyncio.sleep(0.1)  # the line goes to a file; poll it with a deadline
        assert proc.returncode is None  # still draining: the node has 300 s to go
        # Signals within a second of the first are taken as forwarded copies of it, by design.
        await asyncio.sleep(1.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code != 0
        assert time.monotonic() - sent < 20
