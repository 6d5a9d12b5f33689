"""A request body that is not UTF-8 gets a 400 that says so, in the common error shape."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/workspaces/default/triggers/t"),
        ("POST", "/workspaces/default/workflows/w/runs"),
    ],
)
async def test_a_body_that_is_not_utf8_is_a_400_naming_the_encoding(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    body = b'{"name": "t", "type": "kafka", "topic": "caf\xe9"}'  # Latin-1, not UTF-8
    response = await api.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["field"] == "body"
    assert error["message"] == "body: not valid UTF-8 (byte 0xe9 at offset 44); send JSON as UTF-8"
