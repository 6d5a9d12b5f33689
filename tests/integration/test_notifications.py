"""Notifications end to end inside one event loop: the executor writes outbox rows with its state
changes, the notifier delivers them to a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.db import connections as connection_repo
from shared.db.connections import ConnectionSpec
from shared.db.errors import Invalid
from shared.db.notifications import enqueue_sla_misses, enqueue_test
from shared.models.notifications import NotifyRule
from tests.factories import DEFAULT_WS
from tests.support.executor import (
    Pool,
    enqueue,
    flow,
    running_executor,
    save,
    wait_instance,
)
from tests.support.notifier import make_due, running_notifier, wait_rows
from tests.support.receivers import Request, http_receiver, self_signed_context, smtp_server
from tests.support.secrets import suite_box

HOSTILE = '<script>alert(1)</script> **bold** [x](http://evil) "},{"injected":"1" ${event} &amp;'
SIGNING_KEY = "hook-signing-key"


async def _connections(pool: Pool, smtp_port: int | None = None) -> None:
    await connection_repo.upsert(
        pool,
        DEFAULT_WS,
        ConnectionSpec(name="hook_key", kind="secret", secrets={"key": SIGNING_KEY}),
        suite_box(),
    )
    if smtp_port is not None:
        config = {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "from": "sluice@test"}
        await connection_repo.upsert(
            pool,
            DEFAULT_WS,
            ConnectionSpec(name="smtp_main", kind="smtp", config=config),
            suite_box(),
        )


def _rules(hook_url: str) -> list[dict[str, Any]]:
    return [
        {"on": ["failure"], "channel": "webhook", "url": hook_url, "secret": "hook_key"},
        {
            "on": ["failure"],
            "channel": "email",
            "to": ["oncall@example.com"],
            "connection": "smtp_main",
        },
    ]


def _metric(name: str, channel: str = "webhook") -> float:
    return REGISTRY.get_sample_value(name, {"channel": channel}) or 0.0


async def _states(pool: Pool) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT event, channel, state FROM notifications ORDER BY id")
    return [(r["event"], r["channel"], r["state"]) for r in rows]


async def test_failing_node_sends_exactly_one_email_and_one_signed_webhook(
    pool: Pool, db_url: str
) -> None:
    async with http_receiver() as hook, smtp_server() as smtp:
        await _connections(pool, smtp.port)
        version = await save(
            pool,
            flow(
                "nightly",
                [{"name": "load", "type": "shell", "code": "echo 'disk full'; exit 3"}],
                notify=_rules(hook.url),
            ),
        )
        [instance_id] = await enqueue(pool, version)
        async with running_executor(db_url), running_notifier(db_url):
            assert await wait_instance(pool, instance_id) == "failed"
            sent = "SELECT id FROM notifications WHERE state = 'sent'"
            await wait_rows(pool, sent, count=2)
        assert await _states(pool) == [("failure", "webhook", "sent"), ("failure", "email", "sent")]
        assert len(hook.requests) == 1 and len(smtp.messages) == 1
        assert _metric("sluice_notifications_sent_total", "email") >= 1
        assert (
            REGISTRY.get_sample_value(
                "sluice_notification_delivery_seconds_count", {"channel": "webhook"}
            )
            or 0
        ) >= 1
        message_id = await pool.fetchval("SELECT message_id::text FROM notifications LIMIT 1")

        request = hook.requests[0]
        expected = hmac.new(SIGNING_KEY.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-sluice-signature"] == f"sha256={expected}"
        assert request.headers["idempotency-key"] == message_id
        body = request.json()
        assert body["id"] == message_id
        assert (body["event"], body["workflow"], body["node"]) == ("failure", "nightly", "load")
        assert body["instance_id"] == instance_id and body["state"] == "failed"
        assert "node load failed (exit_code)" in body["reason"]
        assert body["url"] == f"http://console.test/instances/{instance_id}"
        assert "disk full" in body["log_tail"] and body["duration_s"] >= 0

        mail = smtp.messages[0]
        assert mail["Message-ID"] == f"<{message_id}@sluice>"
        assert mail["To"] == "oncall@example.com"
        assert mail["Subject"] == "[sluice] nightly / load failed"
        text = mail.get_body(("plain",))
        assert text is not None
        content = text.get_content()
        assert f"Link: http://console.test/instances/{instance_id}" in content
        assert "disk full" in content
        assert smtp.envelopes == [("sluice@test", ["oncall@example.com"])]


async def test_node_events_start_retry_timeout_and_terminate(pool: Pool, db_url: str) -> None:
    async with http_receiver() as hook:
        node_rule = {
            "on": ["start", "retry", "failure", "timeout"],
            "channel": "webhook",
            "url": hook.url,
        }
        version = await save(
            pool,
            flow(
                "flaky",
                [
                    {
                        "name": "slow",
                        "type": "shell",
                        "code": "sleep 5",
                        "timeout_s": 0.3,
                        "retries": 1,
                        "retry_delay_s": 0,
                        "notify": [node_rule],
                    }
                ],
            ),
        )
        [instance_id] = await enqueue(pool, version)
        async with running_executor(db_url):
            assert await wait_instance(pool, instance_id) == "failed"
        rows = await pool.fetch(
            "SELECT event, node, detail->>'attempt' AS attempt, message_id::text AS id "
            "FROM notifications ORDER BY id"
        )
        seen = sorted((r["event"], r["attempt"]) for r in rows)
        assert seen == sorted(
            [
                ("start", "1"),
                ("retry", "1"),
                ("timeout", "1"),
                ("start", "2"),
                ("failure", "2"),
                ("timeout", "2"),
            ]
        )
        assert len({r["id"] for r in rows}) == 6 and {r["node"] for r in rows} == {"slow"}

        terminate_rule = {"on": ["terminated"], "channel": "webhook", "url": hook.url}
        version = await save(
            pool,
            flow(
                "long",
                [{"name": "wait", "type": "shell", "code": "sleep 30", "notify": [terminate_rule]}],
                notify=[terminate_rule],
            ),
        )
        [long_id] = await enqueue(pool, version)
        from shared.operations.instances import terminate_instance

        async with running_executor(db_url):
            await wait_instance(pool, long_id, "running")
            async with pool.acquire() as conn:
                await terminate_instance(conn, DEFAULT_WS, long_id)
        rows = await pool.fetch(
            "SELECT node FROM notifications WHERE instance_id = $1 AND event = 'terminated'",
            long_id,
        )
        assert sorted(str(r["node"]) for r in rows) == ["None", "wait"]


async def test_receiver_down_then_back_gets_the_message(pool: Pool, db_url: str) -> None:
    async with http_receiver() as probe:
        port = probe.port  # a port nobody listens on once the probe is closed
    rule = NotifyRule(on=["failure"], channel="webhook", url=f"http://127.0.0.1:{port}/hook")
    async with pool.acquire() as conn:
        row_id = await enqueue_test(conn, DEFAULT_WS, rule)
    async with running_notifier(db_url):
        # A claimed row already counts the attempt; the try is over once its lease is released.
        failed = (
            "SELECT 1 FROM notifications WHERE id = $1 AND attempts = 1 AND state = 'pending' "
            "AND lease_token IS NULL"
        )
        await wait_rows(pool, failed, row_id)
        error = await pool.fetchval("SELECT last_error FROM notifications WHERE id = $1", row_id)
        assert "ConnectError" in error
        # The next try is 30 s away (backoff); the receiver comes back and time moves on.
        async with http_receiver(port=port) as hook:
            await make_due(pool)
            sent = "SELECT 1 FROM notifications WHERE id = $1 AND state = 'sent'"
            await wait_rows(pool, sent, row_id)
            assert len(hook.requests) == 1
    assert await pool.fetchval("SELECT attempts FROM notifications WHERE id = $1", row_id) == 2


async def test_always_failing_receiver_ends_dead_after_the_last_try(
    pool: Pool, db_url: str
) -> None:
    dead_before = _metric("sluice_notifications_dead_total")
    retried_before = _metric("sluice_notifications_retried_total")
    async with http_receiver(status=500) as hook:
        rule = NotifyRule(on=["failure"], channel="webhook", url=hook.url)
        async with pool.acquire() as conn:
            row_id = await enqueue_test(conn, DEFAULT_WS, rule)
        async with running_notifier(db_url, max_attempts=3):
            for tries in (1, 2):
                await wait_rows(
                    pool,
                    "SELECT 1 FROM notifications WHERE id = $1 AND attempts = $2 "
                    "AND lease_token IS NULL",
                    row_id,
                    tries,
                )
                await make_due(pool)
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'dead'")
        row = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", row_id)
        assert row is not None
        assert row["attempts"] == 3 and "HTTP 500" in row["last_error"]
        assert len(hook.requests) == 3
        assert len({r.headers["idempotency-key"] for r in hook.requests}) == 1
        assert _metric("sluice_notifications_dead_total") == dead_before + 1
        assert _metric("sluice_notifications_retried_total") == retried_before + 2


async def test_sla_miss_fires_once(pool: Pool, db_url: str) -> None:
    async with http_receiver() as hook:
        rule = {"on": ["sla_miss"], "channel": "webhook", "url": hook.url}
        version = await save(
            pool,
            flow(
                "slow_sla",
                [{"name": "a", "type": "shell", "code": "true"}],
                sla_s=60,
                notify=[rule],
            ),
        )
        [late, fresh] = await enqueue(pool, version, 2)
        # Move time: one instance has been waiting for an hour (no executor runs it).
        await pool.execute(
            "UPDATE instances SET created_at = now() - interval '1 hour' WHERE id = $1", late
        )
        async with running_notifier(db_url):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
            async with pool.acquire() as conn:
                assert await enqueue_sla_misses(conn) == 0
        [request] = hook.requests
        assert request.json()["event"] == "sla_miss" and request.json()["instance_id"] == late
        assert await pool.fetchval("SELECT count(*) FROM notifications") == 1
        assert fresh != late


async def test_sla_miss_fires_once_for_a_run_still_running_past_its_sla(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    node = {
        "name": "long",
        "type": "shell",
        # Runs until the test lets it finish: no sleep decides when.
        "code": f"while [ ! -e {release} ]; do sleep 0.05; done",
    }
    async with http_receiver() as hook:
        rule = {"on": ["sla_miss", "success"], "channel": "webhook", "url": hook.url}
        version = await save(pool, flow("running_sla", [node], sla_s=30, notify=[rule]))
        [instance_id] = await enqueue(pool, version)
        async with running_executor(db_url), running_notifier(db_url):
            await wait_rows(
                pool,
                "SELECT 1 FROM node_instances WHERE instance_id = $1 AND state = 'running'",
                instance_id,
            )
            async with pool.acquire() as conn:
                assert await enqueue_sla_misses(conn) == 0  # 30 s have not passed yet
            # Move time: the run started 40 s ago and is still running.
            await pool.execute(
                "UPDATE instances SET created_at = now() - interval '40 seconds' WHERE id = $1",
                instance_id,
            )
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
            async with pool.acquire() as conn:
                assert await enqueue_sla_misses(conn) == 0  # once, however often it sweeps
            release.touch()
            assert await wait_instance(pool, instance_id) == "succeeded"
            await wait_rows(
                pool, "SELECT 1 FROM notifications WHERE event = 'success' AND state = 'sent'"
            )
        events = [(r.json()["event"], r.json()["state"]) for r in hook.requests]
        assert events == [("sla_miss", "running past its SLA"), ("success", "succeeded")]
        assert {r.json()["instance_id"] for r in hook.requests} == {instance_id}


async def test_hostile_values_arrive_escaped_for_each_format(pool: Pool, db_url: str) -> None:
    async with http_receiver() as hook, smtp_server() as smtp:
        await _connections(pool, smtp.port)
        template = "log: ${log_tail} reason: ${reason} day: ${day}"
        rules = [
            {"on": ["failure"], "channel": "webhook", "url": hook.url, "template": template},
            {"on": ["failure"], "channel": "slack", "url": hook.url, "template": template},
            {
                "on": ["failure"],
                "channel": "email",
                "to": ["a@example.com"],
                "connection": "smtp_main",
                "template": template,
            },
        ]
        code = "cat <<'EOF'\n" + HOSTILE + "\nEOF\nexit 1"
        node = {"name": "h", "type": "shell", "code": code, "parameters": {"day": "$[yyyymmdd]"}}
        version = await save(pool, flow("hostile", [node], notify=rules))
        [instance_id] = await enqueue(pool, version)
        async with running_executor(db_url), running_notifier(db_url):
            await wait_instance(pool, instance_id)
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'", count=3)
        by_kind = {("text" in r.json() and "mrkdwn" in r.json()): r for r in hook.requests}
        webhook_body = by_kind[False].json()
        assert HOSTILE in webhook_body["log_tail"] and HOSTILE in webhook_body["text"]
        assert "injected" not in webhook_body
        slack_text = by_kind[True].json()["text"]
        assert "<script>" not in slack_text and "&lt;script&gt;" in slack_text
        assert by_kind[True].json()["mrkdwn"] is False
        assert "&amp;amp;" in slack_text  # an escaped value stays text
        html = smtp.messages[0].get_body(("html",))
        assert html is not None
        content = html.get_content()
        assert "<script>" not in content and "&lt;script&gt;" in content
        assert "&quot;},{&quot;injected&quot;" in content
        plain = smtp.messages[0].get_body(("plain",))
        assert plain is not None and HOSTILE in plain.get_content()
        # `${event}` inside a value is not a placeholder: one pass, never interpreted.
        assert "${event}" in webhook_body["text"]
        # Parameters are the values the node resolved (cyctime 2026-11-21 in the factories).
        assert webhook_body["text"].endswith("day: 20261121")


async def test_private_addresses_are_refused_unless_allowed(pool: Pool, db_url: str) -> None:
    async with http_receiver() as hook:
        ids = []
        for host in ("127.0.0.1", "localhost"):
            rule = NotifyRule(on=["failure"], channel="webhook", url=f"http://{host}:{hook.port}/")
            async with pool.acquire() as conn:
                ids.append(await enqueue_test(conn, DEFAULT_WS, rule))
        async with running_notifier(db_url, allow_private=False):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'dead'", count=2)
        rows = await pool.fetch("SELECT id, attempts, last_error FROM notifications ORDER BY id")
        literal, named = rows
        assert "127.0.0.1 resolves to 127.0.0.1, a loopback address" in literal["last_error"]
        # A host name is resolved at send time and every answer is checked.
        assert named["last_error"].startswith("localhost resolves to ")
        assert "a loopback address" in named["last_error"]
        assert "SLUICE_NOTIFY_ALLOW_PRIVATE" in named["last_error"]
        assert [r["attempts"] for r in rows] == [1, 1], "refused at once, not retried"
        assert hook.requests == []


async def test_redirects_are_not_followed(pool: Pool, db_url: str) -> None:
    async with http_receiver() as target, http_receiver(status=302) as redirector:
        redirector.answer = b""
        rule = NotifyRule(on=["failure"], channel="webhook", url=redirector.url)
        async with pool.acquire() as conn:
            await enqueue_test(conn, DEFAULT_WS, rule)
        async with running_notifier(db_url):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE last_error LIKE '%HTTP 302%'")
        assert len(redirector.requests) == 1 and target.requests == []


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (
            {"on": ["failure"], "channel": "webhook", "url": "https://x.io", "secret": "nope"},
            "policy.notify.0.secret",
        ),
        (
            {"on": ["failure"], "channel": "email", "to": ["a@b.io"], "connection": "hook_key"},
            "policy.notify.0.connection",
        ),
    ],
)
async def test_unknown_or_wrong_kind_connections_are_rejected_at_save(
    pool: Pool, rule: dict[str, Any], field: str
) -> None:
    await _connections(pool)
    with pytest.raises(Invalid) as info:
        await save(
            pool, flow("bad", [{"name": "a", "type": "shell", "code": "true"}], notify=[rule])
        )
    assert info.value.field == field


async def test_the_checked_address_is_called_with_the_original_host(
    pool: Pool, db_url: str
) -> None:
    async with http_receiver() as hook:
        url = f"http://localhost:{hook.port}/hook?x=1"
        rule = NotifyRule(on=["failure"], channel="wecom", url=url)
        async with pool.acquire() as conn:
            await enqueue_test(conn, DEFAULT_WS, rule)
        async with running_notifier(db_url):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
        [request] = hook.requests
        assert request.headers["host"] == f"localhost:{hook.port}"
        assert request.path == "/hook?x=1"
        assert request.json()["msgtype"] == "text"


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_email_over_starttls_and_implicit_tls_with_login(
    pool: Pool, db_url: str, tmp_path: Path, tls: str
) -> None:
    context = self_signed_context(tmp_path)
    # aiosmtpd offers AUTH only after its own STARTTLS: login is tested on that path.
    login = ("mailer", "pw-123") if tls == "starttls" else None
    async with smtp_server(tls=tls, tls_context=context, login=login) as smtp:

        async def connection(name: str, password: str, verify: bool) -> None:
            config = {
                "host": "127.0.0.1",
                "port": smtp.port,
                "tls": tls,
                "from": "s@test",
                "verify": verify,
                **({"user": "mailer"} if login else {}),
            }
            spec = ConnectionSpec(
                name=name,
                kind="smtp",
                config=config,
                secrets={"password": password} if login else {},
            )
            await connection_repo.upsert(pool, DEFAULT_WS, spec, suite_box())

        await connection("good", "pw-123", False)
        await connection("checks_cert", "pw-123", True)
        ids = {}
        for name in ("good", "checks_cert"):
            rule = NotifyRule(
                on=["failure"], channel="email", to=["a@example.com"], connection=name
            )
            async with pool.acquire() as conn:
                ids[name] = await enqueue_test(conn, DEFAULT_WS, rule)
        async with running_notifier(db_url):
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE last_error IS NOT NULL")
        rows = await pool.fetch("SELECT id, state, last_error FROM notifications")
        by_id = {r["id"]: r for r in rows}
        assert by_id[ids["good"]]["state"] == "sent"
        assert "CERTIFICATE_VERIFY_FAILED" in by_id[ids["checks_cert"]]["last_error"]
        assert "pw-123" not in str([dict(r) for r in rows])
        assert len(smtp.messages) == 1 and smtp.messages[0]["From"] == "s@test"


async def test_a_hanging_receiver_does_not_hold_up_other_messages(pool: Pool, db_url: str) -> None:
    release = asyncio.Event()

    async def hang(_request: Request) -> None:
        await release.wait()

    async with http_receiver(before_answer=hang) as slow, http_receiver() as fast:
        async with pool.acquire() as conn:
            slow_id = await enqueue_test(
                conn, DEFAULT_WS, NotifyRule(on=["failure"], channel="webhook", url=slow.url)
            )
        async with running_notifier(db_url):
            await slow.wait(1)
            async with pool.acquire() as conn:
                fast_id = await enqueue_test(
                    conn, DEFAULT_WS, NotifyRule(on=["failure"], channel="webhook", url=fast.url)
                )
            await wait_rows(
                pool, "SELECT 1 FROM notifications WHERE id = $1 AND state = 'sent'", fast_id
            )
            state = await pool.fetchval("SELECT state FROM notifications WHERE id = $1", slow_id)
            assert state == "pending"
            release.set()
            await wait_rows(
                pool, "SELECT 1 FROM notifications WHERE id = $1 AND state = 'sent'", slow_id
            )


async def test_old_sent_and_dead_rows_are_pruned_pending_ones_kept(pool: Pool, db_url: str) -> None:
    rule = NotifyRule(on=["failure"], channel="webhook", url="http://127.0.0.1:9/")
    async with pool.acquire() as conn:
        ids = [await enqueue_test(conn, DEFAULT_WS, rule) for _ in range(4)]
    await pool.execute(
        "UPDATE notifications SET state = s.state, next_at = now() + interval '1 day', "
        "created_at = now() - s.age FROM unnest($1::bigint[], $2::text[], $3::interval[]) "
        "AS s(id, state, age) WHERE notifications.id = s.id",
        ids,
        ["sent", "dead", "pending", "sent"],
        [timedelta(days=31), timedelta(days=31), timedelta(days=31), timedelta(days=1)],
    )
    async with running_notifier(db_url, retention_days=30):
        await wait_rows(pool, "SELECT 1 WHERE (SELECT count(*) FROM notifications) = 2")
    left = await pool.fetch("SELECT id FROM notifications ORDER BY id")
    assert [r["id"] for r in left] == [ids[2], ids[3]]
