"""Notifications through the API and the CLI: rule validation at save (422 naming the field),
the outbox list with its `dead` filter, test sends, and workspace-scoped authorization."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import shell_node
from tests.support.api import (
    ApiServer,
    Pool,
    make_token,
    sluice_cli,
    table_rows,
)
from tests.support.notifier import make_due, running_notifier, wait_rows
from tests.support.receivers import http_receiver

WS = "/workspaces/default"


def _workflow(policy: dict[str, Any], **node: Any) -> dict[str, Any]:
    return {
        "name": "wf",
        "type": "manual",
        "policy": policy,
        "nodes": [shell_node("a", code="true", **node)],
    }


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    info: dict[str, Any] = response.json()["error"]
    return info


@pytest.mark.parametrize(
    ("policy", "node", "field", "reason"),
    [
        (
            {"notify": [{"on": ["boom"], "channel": "webhook", "url": "https://x.io"}]},
            {},
            "policy.notify.0.on.0",
            "Input should be",
        ),
        (
            {"notify": [{"on": ["failure"], "channel": "fax", "url": "https://x.io"}]},
            {},
            "policy.notify.0.channel",
            "Input should be",
        ),
        (
            {
                "notify": [
                    {
                        "on": ["failure"],
                        "channel": "email",
                        "to": ["a@b.io"],
                        "connection": "missing",
                    }
                ]
            },
            {},
            "policy.notify.0.connection",
            "does not exist",
        ),
        (
            {
                "notify": [
                    {
                        "on": ["failure"],
                        "channel": "webhook",
                        "url": "https://x.io",
                        "secret": "missing",
                    }
                ]
            },
            {},
            "policy.notify.0.secret",
            "does not exist",
        ),
        (
            {},
            {
                "notify": [
                    {
                        "on": ["failure"],
                        "channel": "feishu",
                        "url": "https://x.io",
                        "secret": "gone",
                    }
                ]
            },
            "nodes.0.notify.0.secret",
            "does not exist",
        ),
    ],
)
async def test_bad_notify_rules_are_422_naming_the_field(
    api: httpx.AsyncClient, policy: dict[str, Any], node: dict[str, Any], field: str, reason: str
) -> None:
    info = _error(await api.post(f"{WS}/workflows", json=_workflow(policy, **node)))
    assert info["field"] == field, info
    assert reason in info["message"]


async def test_smtp_and_secret_connections_are_checked_and_never_returned(
    api: httpx.AsyncClient,
) -> None:
    bad = await api.post(f"{WS}/connections", json={"name": "m", "kind": "smtp", "config": {}})
    assert bad.status_code == 422 and "config.host" in bad.text
    made = await api.post(
        f"{WS}/connections",
        json={"name": "k", "kind": "secret", "secrets": {"key": "do-not-show"}},
    )
    assert made.status_code == 201 and "do-not-show" not in made.text
    rule = {"on": ["failure"], "channel": "webhook", "url": "https://x.io", "secret": "k"}
    saved = await api.post(f"{WS}/workflows", json=_workflow({"notify": [rule]}))
    assert saved.status_code == 201, saved.text
    wrong_kind = {"on": ["failure"], "channel": "email", "to": ["a@b.io"], "connection": "k"}
    info = _error(
        await api.post(
            f"{WS}/workflows", json={**_workflow({"notify": [wrong_kind]}), "name": "wf2"}
        )
    )
    assert info["field"] == "policy.notify.0.connection" and "not smtp" in info["message"]


async def test_test_send_list_dead_filter_and_cli(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool, db_url: str
) -> None:
    async with http_receiver() as good, http_receiver(status=503) as bad:
        viewer = await make_token(pool, "default", "viewer")
        async with api_server.client(viewer) as as_viewer:
            refused = await as_viewer.post(
                f"{WS}/notifications/test",
                json={"rule": {"on": ["failure"], "channel": "webhook", "url": good.url}},
            )
            assert refused.status_code == 403
        sent = await api.post(
            f"{WS}/notifications/test",
            json={"rule": {"on": ["failure"], "channel": "slack", "url": good.url}},
        )
        assert sent.status_code == 202, sent.text
        cli = await sluice_cli(
            api_server,
            "notifications",
            "--test",
            f'{{"channel": "webhook", "url": "{bad.url}"}}',
        )
        assert cli.code == 0 and cli.out.startswith("queued test notification"), cli.err
        async with running_notifier(db_url, max_attempts=2):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
            await wait_rows(
                pool,
                "SELECT 1 FROM notifications WHERE attempts = 1 "
                "AND state = 'pending' AND lease_token IS NULL",
            )
            await make_due(pool)
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'dead'")
        assert good.requests[0].json()["text"].startswith("[sluice] sluice test message")

        dead = (await api.get(f"{WS}/notifications", params={"state": "dead"})).json()["items"]
        assert [(n["channel"], n["state"], n["attempts"]) for n in dead] == [("webhook", "dead", 2)]
        assert "HTTP 503" in dead[0]["last_error"]
        everything = (await api.get(f"{WS}/notifications")).json()["items"]
        assert sorted(n["state"] for n in everything) == ["dead", "sent"]
        one = await api.get(f"{WS}/notifications/{dead[0]['id']}")
        assert one.json()["message_id"] == dead[0]["message_id"]
        paged = (await api.get(f"{WS}/notifications", params={"limit": 1})).json()
        assert len(paged["items"]) == 1 and paged["next_cursor"]

        listed = await sluice_cli(api_server, "notifications", "--state", "dead")
        rows = table_rows(listed.out)
        assert rows[0][:4] == ["ID", "STATE", "EVENT", "CHANNEL"]
        assert [r[1:4] for r in rows[1:]] == [["dead", "test", "webhook"]]

        other = await make_token(pool, "other", "admin")
        async with api_server.client(other) as as_other:
            assert (await as_other.get(f"{WS}/notifications")).status_code == 403
            mine = await as_other.get("/workspaces/other/notifications")
            assert mine.status_code == 200 and mine.json()["items"] == []
            stranger = await as_other.get(f"/workspaces/other/notifications/{dead[0]['id']}")
            assert stranger.status_code == 404


async def test_cli_names_the_bad_field_of_a_test_rule(api_server: ApiServer) -> None:
    result = await sluice_cli(api_server, "notifications", "--test", '{"channel": "pager"}')
    assert result.code == 2
    assert result.err.startswith("error: --test: channel:"), result.err
    result = await sluice_cli(
        api_server, "notifications", "--test", '{"channel": "email", "to": ["a@b.io"]}'
    )
    assert result.code == 2 and "connection: the email channel needs" in result.err
