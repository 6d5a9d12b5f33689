"""The `sluice` client commands as real processes against `sluice run api`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import intake
from tests.factories import kafka_event
from tests.support.api import ApiServer, Pool, api_subprocess, make_token, sluice_cli, table_rows
from tests.support.executor import (
    carrying_out_requests,
    running_executor,
    wait_instance,
    wait_request,
)

TRIGGER = {"name": "kt", "type": "kafka", "topic": "orders", "filter": "value.action == 'buy'"}
WORKFLOW = {
    "name": "wf",
    "type": "triggered",
    "trigger": "kt",
    "nodes": [{"name": "a", "type": "shell", "code": "echo a"}],
}
WAREHOUSE_EXAMPLE = Path(__file__).parents[2] / "examples" / "warehouse" / "warehouse.yaml"
YAML_V2 = """\
name: kt
type: kafka
topic: orders
filter: value.action == 'buy'
---
name: wf
type: triggered
trigger: kt
policy:
  priority: 5
nodes:
  - name: a
    type: shell
    code: echo a
  - name: b
    type: shell
    upstream: [a]
    code: echo b
"""


@pytest.fixture(name="server")
async def server_fixture(db_url: str) -> AsyncIterator[ApiServer]:
    async with api_subprocess(db_url) as server:
        yield server


async def test_apply_creates_updates_and_reports_unchanged(
    server: ApiServer, tmp_path: Path
) -> None:
    first = tmp_path / "specs.json"
    first.write_text(json.dumps([WORKFLOW, TRIGGER]))
    created = await sluice_cli(server, "apply", "-f", str(first))
    assert created.code == 0, created.err
    assert created.out.splitlines() == ["trigger/kt created", "workflow/wf created (v1), published"]
    same = await sluice_cli(server, "apply", "-f", str(first))
    assert same.out.splitlines() == ["trigger/kt unchanged", "workflow/wf unchanged"]

    second = tmp_path / "specs.yaml"
    second.write_text(YAML_V2)
    updated = await sluice_cli(server, "apply", "-f", str(second), "--no-publish")
    assert updated.out.splitlines() == ["trigger/kt unchanged", "workflow/wf updated (v2)"]
    published = await sluice_cli(server, "apply", "-f", str(second))
    assert published.out.splitlines() == ["trigger/kt unchanged", "workflow/wf published (v2)"]
    from_stdin = await sluice_cli(server, "apply", "-f", "-", "--json", stdin=json.dumps(TRIGGER))
    assert from_stdin.json()[0]["action"] == "unchanged"

    listed = await sluice_cli(server, "workflows")
    assert table_rows(listed.out) == [
        ["NAME", "TYPE", "TRIGGER", "LATEST", "PUBLISHED", "FROZEN"],
        ["wf", "triggered", "kt", "v2", "v2", "no"],
    ]
    triggers = await sluice_cli(server, "triggers", "--json")
    assert [t["name"] for t in triggers.json()] == ["kt"]
    diff = await sluice_cli(server, "diff", "wf", "1", "2")
    assert diff.out.startswith("--- wf@v1\n+++ wf@v2\n")
    assert '+      "name": "b",' in diff.out
    shown = await sluice_cli(server, "workflow", "wf")
    assert "latest v2, published v2" in shown.out


async def test_apply_loads_the_warehouse_example_with_its_workflow_trigger(
    server: ApiServer,
) -> None:
    # A `type: workflow` trigger is a trigger: saved first, before the workflow bound to it.
    applied = await sluice_cli(server, "apply", "-f", str(WAREHOUSE_EXAMPLE), "--json")
    assert applied.code == 0, applied.err
    actions = {(r["kind"], r["name"]): r["action"] for r in applied.json()}
    assert actions == {
        ("trigger", "warehouse_report_finished"): "created",
        ("workflow", "warehouse_ods_orders"): "created (v1), published",
        ("workflow", "warehouse_dwd_orders"): "created (v1), published",
        ("workflow", "warehouse_daily_report"): "created (v1), published",
        ("workflow", "warehouse_report_announce"): "created (v1), published",
    }
    triggers = await sluice_cli(server, "triggers", "--json")
    assert [(t["name"], t["type"]) for t in triggers.json()] == [
        ("warehouse_report_finished", "workflow")
    ]


async def test_apply_reports_invalid_specs_and_keeps_going(
    server: ApiServer, tmp_path: Path
) -> None:
    nodes = [
        {"name": "a", "type": "shell", "code": "echo a"},
        {"name": "b", "type": "shell", "code": "x", "upstream": ["zz"]},
    ]
    bad = {**WORKFLOW, "name": "bad", "nodes": nodes}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([TRIGGER, bad, WORKFLOW]))
    result = await sluice_cli(server, "apply", "-f", str(path))
    assert result.code == 1
    assert result.err == "error: workflow 'bad': nodes.1.upstream: unknown node 'zz'\n"
    assert result.out.splitlines() == ["trigger/kt created", "workflow/wf created (v1), published"]
    missing = await sluice_cli(server, "apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.code == 2 and missing.err.startswith("error: cannot read")
    garbage = await sluice_cli(server, "apply", "-f", "-", stdin="a: [unclosed")
    assert garbage.code == 2 and "neither JSON nor YAML" in garbage.err


async def test_run_watch_terminate_rerun(server: ApiServer, pool: Pool, tmp_path: Path) -> None:
    manual = {
        "name": "m",
        "type": "manual",
        "nodes": [{"name": "a", "type": "shell", "code": "true"}],
    }
    spec = tmp_path / "m.json"
    spec.write_text(json.dumps(manual))
    assert (await sluice_cli(server, "apply", "-f", str(spec))).code == 0
    ran = await sluice_cli(
        server,
        "run-workflow",
        "m",
        "--message",
        '{"k": [1, 2]}',
        "--param",
        "x=1=2",
        "--priority",
        "7",
    )
    assert ran.code == 0, ran.err
    words = ran.out.split()
    assert (words[0], words[2]) == ("instance", "waiting")
    iid = words[1]
    detail = (await sluice_cli(server, "instance", iid, "--json")).json()
    assert detail["trigger_message"] == {"k": [1, 2]}
    assert detail["parameters"] == {"x": "1=2"}
    assert (detail["priority"], detail["kind"]) == (7, "manual")

    rows = table_rows((await sluice_cli(server, "instances", "--workflow", "m")).out)
    assert rows[0] == ["ID", "WORKFLOW", "VERSION", "KIND", "STATE", "NODES", "CREATED", "FINISHED"]
    assert rows[1][:6] == [iid, "m", "v1", "manual", "waiting", "0/1"]
    human = await sluice_cli(server, "instance", iid)
    assert "NODE" in human.out and "pending" in human.out

    async with carrying_out_requests(pool):
        terminated = await sluice_cli(server, "terminate", iid)
        assert terminated.out == f"instance {iid} terminated\n"
        again = await sluice_cli(server, "terminate", iid)
        assert (
            again.code == 1
            and again.err == f"error: instance {iid} has already ended (terminated)\n"
        )
        rerun = await sluice_cli(server, "rerun", iid, "--failed")
        assert rerun.out == f"instance {iid} waiting (rerun failed)\n"
    waiting = await sluice_cli(server, "instances", "--state", "waiting", "--json")
    assert [i["id"] for i in waiting.json()] == [int(iid)]

    draft_only = {**manual, "name": "d"}
    spec.write_text(json.dumps(draft_only))
    await sluice_cli(server, "apply", "-f", str(spec), "--no-publish")
    refused = await sluice_cli(server, "run-workflow", "d")
    assert refused.code == 1 and "has no published version" in refused.err
    drafted = await sluice_cli(server, "run-workflow", "d", "--draft", "--json")
    assert drafted.json()["state"] == "waiting"
    bad_message = await sluice_cli(server, "run-workflow", "d", "--message", "{nope")
    assert bad_message.code == 2 and bad_message.err.startswith("error: --message: not valid JSON")


async def test_publish_freeze_unfreeze_delete(server: ApiServer, tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps([TRIGGER, WORKFLOW]))
    await sluice_cli(server, "apply", "-f", str(spec), "--no-publish")
    assert (await sluice_cli(server, "publish", "wf")).out == "workflow/wf published (v1)\n"
    assert (await sluice_cli(server, "freeze", "wf")).out == "workflow/wf frozen\n"
    frozen = (await sluice_cli(server, "workflows", "--json")).json()
    assert frozen[0]["frozen"] is True
    assert (await sluice_cli(server, "unfreeze", "wf")).out == "workflow/wf unfrozen\n"
    in_use = await sluice_cli(server, "delete", "trigger", "kt")
    assert in_use.code == 1 and "bound to workflows: wf" in in_use.err
    assert (await sluice_cli(server, "delete", "workflow", "wf")).out == "workflow/wf deleted\n"
    assert (await sluice_cli(server, "delete", "trigger", "kt")).code == 0
    gone = await sluice_cli(server, "publish", "wf")
    assert (gone.code, gone.err) == (1, "error: workflow 'wf' not found\n")


async def test_events_show_why_a_run_did_or_did_not_start(
    server: ApiServer, pool: Pool, tmp_path: Path
) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps([TRIGGER, WORKFLOW]))
    await sluice_cli(server, "apply", "-f", str(spec))
    [bought] = await intake.admit(pool, kafka_event(offset=1, value='{"action": "buy"}'))
    [looked] = await intake.admit(pool, kafka_event(offset=2, value='{"action": "look"}'))
    rows = table_rows((await sluice_cli(server, "events")).out)
    assert rows[0] == ["ID", "SOURCE", "SUBJECT", "REF", "RECEIVED", "OUTCOMES"]
    iid = bought.instance_ids[0]
    assert rows[1][:4] == [str(looked.event_id), "kafka", "orders", "orders/0/2"]
    assert rows[1][-1] == "kt:filtered"
    assert rows[2][-1] == f"kt:admitted[{iid}]"
    only = await sluice_cli(server, "events", "--outcome", "admitted", "--json")
    assert [e["id"] for e in only.json()] == [bought.event_id]
    shown = await sluice_cli(server, "event", str(looked.event_id))
    lines = shown.out.splitlines()
    assert lines[0] == f"event:     {looked.event_id}"
    header = lines.index("TRIGGER  WORKFLOW  OUTCOME   INSTANCES  DETAIL")
    assert lines[header + 1].split()[:4] == ["kt", "-", "filtered", "-"]


@pytest.mark.parametrize(
    ("env", "args", "code", "err"),
    [
        ({}, ("instance", "999"), 1, "error: instance 999 not found\n"),
        ({"SLUICE_TOKEN": "slc_wrong"}, ("workflows",), 1, "error: invalid or revoked token\n"),
        ({"SLUICE_TOKEN": ""}, ("workflows",), 1, "error: missing bearer token\n"),
        (
            {"SLUICE_WORKSPACE": "elsewhere"},
            ("workflows",),
            1,
            "error: this token belongs to workspace 'default'; "
            "it grants nothing in workspace 'elsewhere'\n",
        ),
        ({"SLUICE_API_URL": "http://127.0.0.1:9"}, ("workflows",), 3, "error: cannot reach"),
    ],
)
async def test_errors_are_one_line_with_an_exit_code(
    server: ApiServer, env: dict[str, str], args: tuple[str, ...], code: int, err: str
) -> None:
    env = dict(env)
    token = env.pop("SLUICE_TOKEN", None)
    result = await sluice_cli(server, *args, token=token, env=env)
    assert result.code == code
    assert result.err.startswith(err)
    assert result.err.count("\n") == 1


async def test_workspace_flag_and_roles(server: ApiServer, pool: Pool) -> None:
    viewer = await make_token(pool, "team", "viewer")
    listed = await sluice_cli(server, "workflows", "--workspace", "team", token=viewer)
    assert listed.code == 0 and table_rows(listed.out) == [
        ["NAME", "TYPE", "TRIGGER", "LATEST", "PUBLISHED", "FROZEN"]
    ]
    refused = await sluice_cli(
        server, "apply", "-f", "-", "-w", "team", token=viewer, stdin=json.dumps(TRIGGER)
    )
    assert refused.code == 1
    assert "role 'viewer' may not do this; it needs 'developer' or higher" in refused.err


async def test_terminate_waits_for_an_executor_and_says_when_none_runs(
    server: ApiServer, pool: Pool, tmp_path: Path
) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(
        json.dumps(
            {
                "name": "s",
                "type": "manual",
                "nodes": [{"name": "a", "type": "shell", "code": "sleep 300"}],
            }
        )
    )
    assert (await sluice_cli(server, "apply", "-f", str(spec))).code == 0
    iid = (await sluice_cli(server, "run-workflow", "s")).out.split()[1]
    alone = await sluice_cli(server, "terminate", iid, "--timeout", "0.5")
    assert alone.code == 1, alone.err
    assert "still pending after 0.5s" in alone.err and "is one running?" in alone.err
    assert "carried out when one starts" in alone.err
    # Asked again while pending: the same request, not a second one.
    assert (await sluice_cli(server, "terminate", iid, "--timeout", "0.5")).code == 1
    assert await pool.fetchval("SELECT count(*) FROM instance_requests") == 1
    request_id = await pool.fetchval("SELECT id FROM instance_requests")
    # The request waits in the database and is carried out once an executor starts.
    async with running_executor(server.db_url):
        assert await wait_request(pool, request_id) == "done"
    assert await wait_instance(pool, int(iid)) == "terminated"
    shown = await sluice_cli(server, "instance", iid, "--json")
    assert [n["state"] for n in shown.json()["nodes"]] == ["terminated"]
