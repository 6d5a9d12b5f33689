"""Notification rules (`policy.notify`, node `notify`) and the outbox rows they produce."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from shared.models.common import Name, Record, Spec

NotifyEvent = Literal["start", "success", "failure", "timeout", "retry", "terminated", "sla_miss"]
Channel = Literal["webhook", "slack", "dingtalk", "feishu", "wecom", "email"]
NotificationState = Literal["pending", "sent", "dead"]
NOTIFY_EVENTS: tuple[str, ...] = (
    "start",
    "success",
    "failure",
    "timeout",
    "retry",
    "terminated",
    "sla_miss",
)
HTTP_CHANNELS: frozenset[str] = frozenset({"webhook", "slack", "dingtalk", "feishu", "wecom"})
# Channels whose receivers verify a signature made with a `secret` connection's key.
SIGNED_CHANNELS: frozenset[str] = frozenset({"webhook", "dingtalk", "feishu"})
MAX_TEMPLATE = 10_000


class NotifyRule(Spec):
    """Where to send which events. `secret` and `connection` name workspace connections."""

    on: list[NotifyEvent] = Field(min_length=1)
    channel: Channel
    url: str | None = Field(default=None, max_length=2048)
    secret: Name | None = None
    to: list[str] | None = None
    connection: Name | None = None
    template: str | None = Field(default=None, max_length=MAX_TEMPLATE)

    @field_validator("on")
    @classmethod
    def _unique_events(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an event is listed twice")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; name a `secret` connection instead")
        return value

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: list[str] | None) -> list[str] | None:
        for address in value or []:
            local, at, domain = address.partition("@")
            if not at or not local or "." not in domain or any(c in address for c in "\r\n<>, "):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _check_channel(self) -> NotifyRule:
        if self.channel == "email":
            if not self.to:
                raise ValueError("to: the email channel needs at least one address")
            if self.connection is None:
                raise ValueError("connection: the email channel needs an smtp connection")
            for field in ("url", "secret"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field}: not used by the email channel")
        else:
            if self.url is None:
                raise ValueError(f"url: the {self.channel} channel needs a URL")
            for field in ("to", "connection"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field}: only the email channel uses it")
            if self.secret is not None and self.channel not in SIGNED_CHANNELS:
                raise ValueError(f"secret: the {self.channel} channel does not sign messages")
        return self


def node_rules(value: list[NotifyRule]) -> list[NotifyRule]:
    """A node has no SLA of its own: `sla_miss` belongs to the workflow policy."""
    for index, rule in enumerate(value):
        if "sla_miss" in rule.on:
            raise ValueError(f"{index}.on: sla_miss is an instance event; set it in policy.notify")
    return value


class NotificationOut(Record):
    """One outbox row as the API shows it (never the rule's secrets: it names connections)."""

    id: int
    message_id: str
    workspace: str
    instance_id: int | None
    workflow: str | None
    node: str | None
    event: str
    channel: str
    state: NotificationState
    attempts: int
    last_error: str | None
    created_at: datetime
    next_at: datetime
    sent_at: datetime | None


class NotifyTestRequest(Spec):
    """`POST .../notifications/test`: send one test message through a rule now."""

    rule: NotifyRule


def finish_events(state: str, outcome: str, reason: str | None) -> list[str]:
    """The node events an attempt's end raises, from the node state it left behind.

    A timed-out attempt raises `timeout` whether or not it is retried; `failure` is the node's
    final failure (no retry left), `retry` a failure that will run again. A released attempt
    (executor shutdown) raises nothing: it simply runs again.
    """
    if outcome == "released":
        return []
    events: list[str] = []
    if state == "succeeded":
        events.append("success")
    elif state == "failed":
        events.append("failure")
    elif state == "ready":
        events.append("retry")
    if reason == "timeout" and state != "succeeded":
        events.append("timeout")
    return events
