"""Real processes: `sluice run api` and `sluice run executor` on one database.

A run requested through the API is executed by the executor; its log is read and followed through
the API and the CLI; terminate and rerun go through the API. Waiting is done by following logs
(the stream ends when the attempt ends), never by sleeping. Node code reads what the executor
always provides ($SLUICE_TRIGGER_MESSAGE_FILE, $SLUICE_INSTANCE_ID), not `${...}` placeholders:
those are the parameter-binding tests' subject.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import (
    ROOT,
    SLUICE,
    ApiServer,
    api_subprocess,
    sluice_cli,
    sluice_env,
    stop_process,
)

WS = "/workspaces/default"


@asynccontextmanager
async def executor_process(db_url: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    env = sluice_env(db_url, SLUICE_POLL_INTERVAL_S="0.5", SLUICE_DRAIN_TIMEOUT_S="0")
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            SLUICE, "run", "executor", env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        yield proc
    finally:
        code = await stop_process(proc)
        if code != 0:
            text = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"executor exited with {code}:\n{text[-3000:]}")


@pytest.fixture(name="stack")
async def stack_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[ApiServer]:
    async with api_subprocess(db_url) as server, executor_process(db_url, tmp_path / "ex.log"):
        yield server


async def follow(client: httpx.AsyncClient, instance_id: int, node: str) -> str:
    path = f"{WS}/instances/{instance_id}/nodes/{node}/log"
    async with client.stream("GET", path, params={"follow": True}) as response:
        assert response.status_code == 200
        return "".join([chunk async for chunk in response.aiter_text()])


async def carried_out(client: httpx.AsyncClient, asked: httpx.Response) -> dict[str, Any]:
    """Poll a terminate/rerun request until the executor has carried it out."""
    assert asked.status_code == 202, asked.text
    path = f"{WS}/instances/{asked.json()['instance_id']}/requests/{asked.json()['id']}"
    deadline = time.monotonic() + 10
    while True:
        request: dict[str, Any] = (await client.get(path)).json()
        if request["state"] != "pending" or time.monotonic() > deadline:
            return request
        await asyncio.sleep(0.05)


async def apply(client: httpx.AsyncClient, *specs: dict[str, Any]) -> None:
    for spec in specs:
        kind = "triggers" if spec.get("type") in ("kafka", "s3") else "workflows"
        response = await client.put(f"{WS}/{kind}/{spec['name']}", json=spec, params={"publish": 1})
        assert response.is_success, response.text


TRIGGER = {"name": "oss_new_file_trigger", "type": "s3", "bucket": "data"}
WORKFLOW = {
    "name": "process_file",
    "type": "triggered",
    "trigger": "oss_new_file_trigger",
    "parameters": {"region": "cn-hangzhou"},
    "nodes": [
        {
            "name": "print_path",
            "type": "shell",
            "code": 'echo "A new file has arrived: $(cat "$SLUICE_TRIGGER_MESSAGE_FILE")"',
        },
        {
            "name": "report",
            "type": "shell",
            "upstream": ["print_path"],
            "code": 'echo "run=$SLUICE_INSTANCE_ID"',
        },
    ],
}
MESSAGE = {"data": {"s3": {"object": {"key": "input/a b.csv"}}}}


async def test_api_run_is_executed_and_its_log_readable_by_api_and_cli(stack: ApiServer) -> None:
    async with stack.client() as client:
        await apply(client, TRIGGER, WORKFLOW)
        accepted = await client.post(
            f"{WS}/workflows/process_file/runs", json={"trigger_message": MESSAGE}
        )
        assert accepted.status_code == 202
        iid = accepted.json()["instance_id"]
        first = await follow(client, iid, "print_path")
        second = await follow(client, iid, "report")
        detail = (await client.get(f"{WS}/instances/{iid}")).json()
    assert first.startswith("A new file has arrived: {")
    assert "input/a b.csv" in first
    assert f"run={iid}\n" in second
    assert detail["state"] == "succeeded"
    assert [(n["name"], n["state"], len(n["attempts"])) for n in detail["nodes"]] == [
        ("print_path", "succeeded", 1),
        ("report", "succeeded", 1),
    ]
    assert detail["nodes"][0]["attempts"][0]["exit_code"] == 0

    printed = await sluice_cli(stack, "logs", str(iid), "print_path")
    assert printed.code == 0 and printed.out == first
    followed = await sluice_cli(stack, "logs", str(iid), "report", "--follow")
    assert followed.code == 0 and followed.out == second
    shown = await sluice_cli(stack, "instance", str(iid))
    assert "succeeded" in shown.out.splitlines()[4]


async def test_cli_run_workflow_waits_and_follows(stack: ApiServer, tmp_path: Path) -> None:
    message = tmp_path / "message.json"
    message.write_text(json.dumps(MESSAGE))
    async with stack.client() as client:
        await apply(client, TRIGGER, WORKFLOW)
    done = await sluice_cli(
        stack,
        "run-workflow",
        "process_file",
        "--message",
        f"@{message}",
        "--param",
        "region=eu",
        "--wait",
        "--timeout",
        "60",
    )
    assert done.code == 0, done.err
    iid = done.out.split()[1]
    assert done.out.splitlines()[-1] == f"instance {iid} succeeded"
    report = await sluice_cli(stack, "logs", iid, "report")
    assert f"run={iid}" in report.out
    shown = await sluice_cli(stack, "instance", iid, "--json")
    assert shown.json()["parameters"] == {"region": "eu"}
    assert shown.json()["kind"] == "manual"
    failing = {
        "name": "fails",
        "type": "manual",
        "nodes": [{"name": "x", "type": "shell", "code": "exit 3"}],
    }
    async with stack.client() as client:
        await apply(client, failing)
    failed = await sluice_cli(stack, "run-workflow", "fails", "--wait", "--json")
    assert failed.code == 1
    assert failed.json()["state"] == "failed"
    assert failed.json()["nodes"][0]["attempts"][0]["exit_code"] == 3


async def test_terminate_kills_a_running_node_promptly(stack: ApiServer) -> None:
    spec = {
        "name": "long",
        "type": "manual",
        "nodes": [
            {"name": "sleeper", "type": "shell", "code": "echo started\nsleep 300\necho never"},
            {"name": "after", "type": "shell", "code": "echo after", "upstream": ["sleeper"]},
        ],
    }
    async with stack.client() as client:
        await apply(client, spec)
        iid = (await client.post(f"{WS}/workflows/long/runs", json={})).json()["instance_id"]
        path = f"{WS}/instances/{iid}/nodes/sleeper/log"
        async with client.stream("GET", path, params={"follow": True}) as response:
            chunks = response.aiter_text()
            assert "started" in await anext(chunks)
            began = time.monotonic()
            asked = await client.post(f"{WS}/instances/{iid}/terminate")
            assert asked.status_code == 202
            assert (asked.json()["action"], asked.json()["instance_id"]) == ("terminate", iid)
            rest = "".join([c async for c in chunks])
            # Recorded by the API, carried out by the executor, the process killed: within 2 s.
            assert time.monotonic() - began < 2.0
        assert "never" not in rest
        request = await carried_out(client, asked)
        assert (request["state"], request["instance_state"]) == ("done", "terminated")
        detail = (await client.get(f"{WS}/instances/{iid}")).json()
    assert detail["state"] == "terminated"
    assert [(n["name"], n["state"]) for n in detail["nodes"]] == [
        ("sleeper", "terminated"),
        ("after", "terminated"),
    ]
    assert detail["nodes"][0]["attempts"][0]["state"] == "terminated"


async def test_rerun_failed_runs_only_what_failed(stack: ApiServer, tmp_path: Path) -> None:
    marker = tmp_path / "second-time"
    spec = {
        "name": "flaky",
        "type": "manual",
        "nodes": [
            {"name": "ok", "type": "shell", "code": "echo fine"},
            {
                "name": "flaky",
                "type": "shell",
                "upstream": ["ok"],
                "code": f"if [ -e '{marker}' ]; then echo recovered; "
                f"else touch '{marker}'; echo broken; exit 1; fi",
            },
            {"name": "last", "type": "shell", "upstream": ["flaky"], "code": "echo last"},
        ],
    }
    async with stack.client() as client:
        await apply(client, spec)
        iid = (await client.post(f"{WS}/workflows/flaky/runs", json={})).json()["instance_id"]
        assert "broken" in await follow(client, iid, "flaky")
        failed = (await client.get(f"{WS}/instances/{iid}")).json()
        assert failed["state"] == "failed"
        assert [n["state"] for n in failed["nodes"]] == ["succeeded", "failed", "upstream_failed"]

        rerun = await client.post(f"{WS}/instances/{iid}/rerun", json={"mode": "failed"})
        assert rerun.status_code == 202 and rerun.json()["instance_id"] == iid
        assert (await carried_out(client, rerun))["state"] == "done"
        assert "last" in await follow(client, iid, "last")
        detail = (await client.get(f"{WS}/instances/{iid}")).json()
        again = await client.get(f"{WS}/instances/{iid}/nodes/flaky/log", params={"attempt": 1})
    assert detail["state"] == "succeeded"
    attempts = {n["name"]: [a["state"] for a in n["attempts"]] for n in detail["nodes"]}
    assert attempts == {
        "ok": ["succeeded"],
        "flaky": ["failed", "succeeded"],
        "last": ["succeeded"],
    }
    assert "broken" in again.text  # the first attempt's log is kept
    cli = await sluice_cli(stack, "logs", str(iid), "flaky")
    assert "recovered" in cli.out
