"""Slack incoming webhook: plain text with markdown off, so values are never formatted."""

from __future__ import annotations

from typing import Any

from services.notifier.channels.base import Delivery, HttpSender, json_bytes
from services.notifier.templates import escape_slack


def payload(text: str) -> dict[str, Any]:
    return {"text": escape_slack(text), "mrkdwn": False}


async def send(delivery: Delivery, http: HttpSender) -> None:
    assert delivery.rule.url is not None
    headers = {"Idempotency-Key": delivery.ctx.message_id}
    await http.post(delivery.rule.url, json_bytes(payload(delivery.text)), headers)
