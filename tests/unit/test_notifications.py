"""Notification rules, message templates and escaping, channel formats, the SSRF check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.notifier.channels import dingtalk, email, feishu, slack, webhook, wecom
from services.notifier.channels.base import Delivery, PermanentError, json_bytes
from services.notifier.config import NotifierConfig
from services.notifier.ssrf import Refused, refusal, resolve
from services.notifier.templates import (
    MessageContext,
    default_text,
    escape_html,
    escape_slack,
    render,
    substitute,
)
from shared.models.notifications import NotifyRule, finish_events
from shared.models.workflows import WorkflowSpec

HOOK = {"channel": "webhook", "url": "https://hooks.example.com/x"}
MAIL = {"channel": "email", "to": ["oncall@example.com"], "connection": "smtp_main"}


def _spec(
    policy: dict[str, Any] | None = None, node: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": "wf",
        "type": "manual",
        "policy": policy or {},
        "nodes": [{"name": "a", "type": "shell", "code": "true", **(node or {})}],
    }


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        WorkflowSpec.model_validate(data)
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]


def test_policy_and_node_rules_are_accepted() -> None:
    spec = WorkflowSpec.model_validate(
        _spec(
            {"sla_s": 60, "notify": [{"on": ["failure", "sla_miss"], **HOOK, "secret": "k"}]},
            {"notify": [{"on": ["start", "failure"], **MAIL}]},
        )
    )
    assert spec.policy.sla_s == 60
    assert spec.policy.notify[0].secret == "k"
    assert spec.nodes[0].notify[0].channel == "email"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_spec({"notify": [{"on": ["explode"], **HOOK}]}), "policy.notify.0.on.0"),
        (
            _spec({"notify": [{"on": ["failure"], "channel": "pager", "url": "https://x.io"}]}),
            "policy.notify.0.channel",
        ),
        (_spec({"notify": [{"on": ["failure"], "channel": "webhook"}]}), "url: the webhook"),
        (
            _spec({"notify": [{"on": ["failure"], "channel": "slack", "url": "ftp://x.io/"}]}),
            "policy.notify.0.url",
        ),
        (_spec({"notify": [{"on": ["failure"], **MAIL, "connection": None}]}), "connection:"),
        (
            _spec({"notify": [{"on": ["failure"], **MAIL, "to": ["not-an-address"]}]}),
            "policy.notify.0.to",
        ),
        (
            _spec(
                {
                    "notify": [
                        {
                            "on": ["failure"],
                            "channel": "wecom",
                            "url": "https://x.io",
                            "secret": "k",
                        }
                    ]
                }
            ),
            "secret: the wecom channel",
        ),
        (_spec({"notify": [{"on": [], **HOOK}]}), "policy.notify.0.on"),
        (_spec({"notify": [{"on": ["failure", "failure"], **HOOK}]}), "listed twice"),
        (_spec(node={"notify": [{"on": ["sla_miss"], **HOOK}]}), "sla_miss is an instance event"),
        (_spec({"sla_s": 0}), "policy.sla_s"),
        (
            _spec({"notify": [{"on": ["failure"], **HOOK, "url": "https://u:p@x.io/"}]}),
            "credentials",
        ),
    ],
)
def test_bad_rules_name_the_field(data: dict[str, Any], needle: str) -> None:
    assert needle in _error(data)


@pytest.mark.parametrize(
    ("state", "outcome", "reason", "events"),
    [
        ("succeeded", "succeeded", None, ["success"]),
        ("failed", "failed", "exit_code", ["failure"]),
        ("failed", "failed", "timeout", ["failure", "timeout"]),
        ("ready", "failed", "exit_code", ["retry"]),
        ("ready", "failed", "timeout", ["retry", "timeout"]),
        ("ready", "lost", "lost", ["retry"]),
        ("failed", "lost", "lost", ["failure"]),
        ("ready", "released", "released", []),
    ],
)
def test_finish_events(state: str, outcome: str, reason: str | None, events: list[str]) -> None:
    assert finish_events(state, outcome, reason) == events


def _ctx(**kw: Any) -> MessageContext:
    base: dict[str, Any] = {
        "message_id": "6f1c",
        "event": "failure",
        "workspace": "default",
        "created_at": datetime(2026, 12, 5, tzinfo=UTC),
        "workflow": "nightly",
        "instance_id": 42,
        "node": "load",
        "state": "failed",
        "reason": "exit_code",
        "exit_code": 3,
        "duration_s": 75.0,
        "url": "http://console/instances/42",
        "log_tail": "boom\n",
        "parameters": {"region": "cn", "obj": {"a": 1}},
    }
    base.update(kw)
    return MessageContext(**base)


def test_default_text_says_what_where_why_how_long_and_links() -> None:
    text = default_text(_ctx())
    assert text.splitlines()[0] == "[sluice] nightly / load failed"
    for part in (
        "Instance: 42 (failed)",
        "Reason: exit_code",
        "Exit code: 3",
        "Duration: 1m15s",
        "Link: http://console/instances/42",
        "Log tail:\nboom",
    ):
        assert part in text


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${workflow.name}:${node.name}:${event}", "nightly:load:failure"),
        ("${region} ${obj}", 'cn {"a":1}'),
        ("${unknown} stays", "${unknown} stays"),
        ("$${event}", "$failure"),
        ("${workflow.instanceId} ${url}", "42 http://console/instances/42"),
    ],
)
def test_user_template_over_parameter_variables(template: str, expected: str) -> None:
    assert render(_ctx(), template) == expected


@settings(max_examples=200, derandomize=True)
@given(st.text(), st.text())
def test_substituted_values_are_never_scanned_again(value: str, other: str) -> None:
    """A value holding `${...}` stays that text: one pass, no interpretation."""
    assert substitute("<${a}|${b}>", {"a": value, "b": other}) == f"<{value}|{other}>"


@settings(max_examples=200, derandomize=True)
@given(st.text())
def test_formats_escape_every_hostile_value(value: str) -> None:
    ctx = _ctx(reason=value, node=value, workflow=value)
    text = render(ctx, "${reason}")
    body = json.loads(json_bytes(webhook.payload(ctx, text)))
    assert body["reason"] == value and body["text"] == value and body["node"] == value
    assert json.loads(json.dumps(slack.payload(text)))["mrkdwn"] is False
    shown = slack.payload(text)["text"]
    assert "<" not in shown and ">" not in shown
    assert shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == value
    html_text = escape_html(text)
    assert "<" not in html_text.replace("<br>", "") and '"' not in html_text


def test_hostile_corpus_is_escaped_per_format() -> None:
    hostile = '<script>alert(1)</script> *bold* [x](http://evil) "},{"x":"'
    assert escape_slack(hostile).startswith("&lt;script&gt;")
    assert "&lt;script&gt;" in escape_html(hostile) and "&quot;},{&quot;" in escape_html(hostile)
    for payload in (dingtalk.payload(hostile), wecom.payload(hostile), feishu.payload(hostile)):
        # The body is JSON: the breakers are escaped there and the text arrives unchanged.
        assert json.loads(json_bytes(payload)) == payload


def test_robot_formats() -> None:
    assert dingtalk.payload("hi") == {"msgtype": "text", "text": {"content": "hi"}}
    assert wecom.payload("hi") == {"msgtype": "text", "text": {"content": "hi"}}
    assert feishu.payload("hi") == {"msg_type": "text", "content": {"text": "hi"}}


def test_robot_signatures() -> None:
    signed = feishu.payload("hi", "s3cret", now_s=1700000000)
    key = b"1700000000\ns3cret"
    assert signed["timestamp"] == "1700000000"
    assert signed["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    url = dingtalk.signed_url("https://oapi.dingtalk.com/robot/send?access_token=t", "s3cret", 17)
    assert url.startswith("https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=17&sign=")


def test_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"id":"x"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert webhook.signature("k", body) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_ssrf_refusals(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_backoff_doubles_up_to_the_cap() -> None:
    config = NotifierConfig(backoff_s=2, backoff_max_s=10)
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_rule_round_trips_through_json() -> None:
    rule = NotifyRule.model_validate({"on": ["failure"], **HOOK, "template": "${event}"})
    assert NotifyRule.model_validate(json.loads(rule.model_dump_json())) == rule


@pytest.mark.parametrize(
    ("url", "target", "host", "server_name"),
    [
        (
            "https://93.184.216.34/x?y=1",
            "https://93.184.216.34/x?y=1",
            "93.184.216.34",
            "93.184.216.34",
        ),
        (
            "http://[2606:2800:220:1::1]:8080/h",
            "http://[2606:2800:220:1::1]:8080/h",
            "[2606:2800:220:1::1]:8080",
            None,
        ),
    ],
)
async def test_literal_addresses_are_pinned_without_dns(
    url: str, target: str, host: str, server_name: str | None
) -> None:
    [pinned] = await resolve(url, allow_private=False)
    assert (pinned.url, pinned.host_header, pinned.server_name) == (target, host, server_name)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "https://[::1]/", "http://169.254.169.254/latest/meta-data"]
)
async def test_private_literals_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="SLUICE_NOTIFY_ALLOW_PRIVATE"):
        await resolve(url, allow_private=False)
    assert await resolve(url, allow_private=True)


def test_email_headers_stay_on_one_line_and_html_is_escaped() -> None:
    ctx = _ctx(workflow="wf\r\nBcc: victim@example.com", node=None)
    rule = NotifyRule.model_validate({"on": ["failure"], **MAIL})
    message = email.build(Delivery(ctx=ctx, rule=rule, text="<b>hi</b>"), "s@example.com")
    assert "\n" not in message["Subject"] and message["Bcc"] is None
    assert message["Message-ID"] == "<6f1c@sluice>"
    html = message.get_body(("html",))
    assert html is not None and "&lt;b&gt;hi&lt;/b&gt;" in html.get_content()


@pytest.mark.parametrize(
    ("config", "secrets", "needle"),
    [
        ({}, {}, "config.host"),
        ({"host": "h", "tls": "ssl"}, {}, "config.tls"),
        ({"host": "h", "port": "25"}, {}, "config.port"),
        ({"host": "h", "user": "u"}, {}, "config.user and secrets.password"),
    ],
)
def test_smtp_connection_errors_name_the_field(
    config: dict[str, Any], secrets: dict[str, str], needle: str
) -> None:
    with pytest.raises(PermanentError, match=needle):
        email.smtp_options(config, secrets)


def test_smtp_options_defaults() -> None:
    assert email.smtp_options({"host": "h", "tls": "tls"}, {})["port"] == 465
    options = email.smtp_options({"host": "h", "user": "u"}, {"password": "p"})
    assert (options["port"], options["start_tls"], options["use_tls"]) == (587, True, False)
    assert options["validate_certs"] is True
