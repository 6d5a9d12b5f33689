"""Node outputs over HTTP and the CLI: references checked at save, outputs shown per attempt."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.api import (  # noqa: F401
    ApiServer,
    Pool,
    api_fixture,
    api_server_fixture,
    sluice_cli,
    table_rows,
)
from tests.support.executor import running_executor, wait_instance, wait_request

WS = "/workspaces/default"


def two_nodes(b_code: str, **b: Any) -> dict[str, Any]:
    return {
        "name": "wf",
        "type": "manual",
        "nodes": [
            {"name": "a", "type": "shell", "code": "echo a"},
            {"name": "b", "type": "shell", "code": b_code, **b},
        ],
    }


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            two_nodes("echo ${nodes.a.outputs.rows}"),
            "nodes.1.code",
            ["${nodes.a.outputs.rows}", "node 'a'", "not upstream of 'b'"],
        ),
        (
            two_nodes("true", parameters={"n": "${nodes.zz.outputs.x:-0}"}, upstream=["a"]),
            "nodes.1.parameters.n",
            ["${nodes.zz.outputs.x}", "node 'zz'", "not a node of this workflow"],
        ),
        (
            two_nodes("echo ${nodes.a.rows}", upstream=["a"]),
            "nodes.1.code",
            ["${nodes.a.rows}", "${nodes.<node>.outputs.<path>}"],
        ),
        (
            {**two_nodes("true", upstream=["a"]), "parameters": {"p": "${nodes.a.outputs.x}"}},
            "parameters.p",
            ["node outputs can only be read in a node's own parameters or code"],
        ),
    ],
    ids=["not-upstream", "unknown-node", "malformed", "workflow-parameter"],
)
async def test_a_reference_to_a_non_ancestor_is_refused_naming_node_and_path(
    api: httpx.AsyncClient, spec: dict[str, Any], field: str, words: list[str]
) -> None:
    response = await api.post(f"{WS}/workflows", json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    for word in words:
        assert word in error["message"], error
    assert (await api.get(f"{WS}/workflows")).json()["items"] == []


async def test_a_transitive_ancestor_may_be_referenced(api: httpx.AsyncClient) -> None:
    spec = {
        "name": "chain",
        "type": "manual",
        "nodes": [
            {"name": "a.b", "type": "shell", "code": "true"},
            {"name": "m", "type": "shell", "code": "true", "upstream": ["a.b"]},
            {
                "name": "z",
                "type": "shell",
                "code": 'echo ${nodes["a.b"].outputs.x} ${nodes.m.outputs.y}',
                "upstream": ["m"],
            },
        ],
    }
    response = await api.post(f"{WS}/workflows", json=spec)
    assert response.status_code == 201, response.text


async def test_outputs_per_attempt_over_http_and_cli(
    api: httpx.AsyncClient, api_server: ApiServer, pool: Pool, db_url: str
) -> None:
    spec = {
        "name": "counted",
        "type": "manual",
        "nodes": [
            {
                "name": "a",
                "type": "shell",
                "code": 'printf \'{"attempt": %s, "text": "x y"}\' "$SLUICE_ATTEMPT" '
                '> "$SLUICE_OUTPUT_FILE"',
            },
            {
                "name": "b",
                "type": "shell",
                "upstream": ["a"],
                "code": 'echo "a said ${nodes.a.outputs.attempt}"',
            },
        ],
    }
    assert (await api.post(f"{WS}/workflows", json=spec)).status_code == 201
    run = await api.post(f"{WS}/workflows/counted/runs", json={"draft": True})
    assert run.status_code == 202, run.text
    iid = run.json()["instance_id"]
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
        rerun = await api.post(f"{WS}/instances/{iid}/rerun", json={"mode": "all"})
        assert rerun.status_code == 202, rerun.text
        assert await wait_request(pool, rerun.json()["id"]) == "done"
        assert await wait_instance(pool, iid, "succeeded", "failed") == "succeeded"

    body = (await api.get(f"{WS}/instances/{iid}/nodes/a/outputs")).json()
    assert body["instance_id"] == iid and body["node"] == "a" and body["state"] == "succeeded"
    assert body["attempt"] == 2
    assert body["outputs"] == {"attempt": 2, "text": "x y"}
    assert [(a["attempt"], a["state"], a["outputs"]) for a in body["attempts"]] == [
        (1, "succeeded", {"attempt": 1, "text": "x y"}),
        (2, "succeeded", {"attempt": 2, "text": "x y"}),
    ]
    silent = (await api.get(f"{WS}/instances/{iid}/nodes/b/outputs")).json()
    assert silent["outputs"] == {} and [a["outputs"] for a in silent["attempts"]] == [None, None]
    missing_node = await api.get(f"{WS}/instances/{iid}/nodes/nope/outputs")
    assert missing_node.status_code == 404
    assert "node 'nope'" in missing_node.json()["error"]["message"]
    missing_instance = await api.get(f"{WS}/instances/999999/nodes/a/outputs")
    assert missing_instance.status_code == 404

    as_json = await sluice_cli(api_server, "outputs", str(iid), "a", "--json")
    assert as_json.code == 0, as_json.err
    assert as_json.json() == body
    first = await sluice_cli(api_server, "outputs", str(iid), "a", "--attempt", "1")
    assert json.loads(first.out) == {"attempt": 1, "text": "x y"}
    human = await sluice_cli(api_server, "outputs", str(iid), "a")
    assert human.code == 0, human.err
    head, _, attempts = human.out.partition("\n\n")
    assert head.startswith("node a (succeeded): descendants read attempt 2\n")
    assert json.loads(head.split("\n", 1)[1]) == {"attempt": 2, "text": "x y"}
    rows = table_rows(attempts)
    assert rows[0] == ["ATTEMPT", "STATE", "FINISHED", "OUTPUTS"]
    assert [r[:2] for r in rows[1:]] == [["1", "succeeded"], ["2", "succeeded"]]
    unknown = await sluice_cli(api_server, "outputs", str(iid), "a", "--attempt", "7")
    assert unknown.code == 1 and "attempt 7 of node 'a' not found" in unknown.err
