"""WeCom (WeChat Work) group robot: a `text` message."""

from __future__ import annotations

from typing import Any

from services.notifier.channels.base import Delivery, HttpSender, check_robot_answer, json_bytes


def payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": text}}


async def send(delivery: Delivery, http: HttpSender) -> None:
    assert delivery.rule.url is not None
    headers = {"Idempotency-Key": delivery.ctx.message_id}
    response = await http.post(delivery.rule.url, json_bytes(payload(delivery.text)), headers)
    check_robot_answer(response, "errcode")
