"""Spec validation through the API: node code that hands a placeholder to a second interpreter
is refused with 422, naming the node, the line and the safe form."""

from __future__ import annotations

import httpx


async def test_reparsed_placeholders_are_refused_with_422(api: httpx.AsyncClient) -> None:
    spec = {
        "name": "wf",
        "type": "manual",
        "parameters": {"user": "x"},
        "nodes": [
            {"name": "ok", "type": "shell", "code": "echo ${user}"},
            {"name": "load", "type": "shell", "code": "set -e\ntrap 'echo ${user}' EXIT"},
        ],
    }
    response = await api.post("/workspaces/default/workflows", json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "nodes.load.code"
    assert "line 2: ${user} is inside the action of `trap`" in error["message"]
    assert '"$SLUICE_PARAM_USER"' in error["message"]
    spec["nodes"] = [
        {"name": "py", "type": "python", "code": "import os\nos.system(f'ls ${user}')"},
    ]
    response = await api.post("/workspaces/default/workflows", json=spec)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "nodes.py.code"
    assert 'os.environ["SLUICE_PARAM_USER"]' in response.json()["error"]["message"]
    # The safe form is accepted.
    spec["nodes"] = [
        {"name": "ok", "type": "shell", "code": "trap 'echo \"$SLUICE_PARAM_USER\"' EXIT"}
    ]
    assert (await api.post("/workspaces/default/workflows", json=spec)).status_code == 201
