"""Feishu/Lark custom bot: a `text` message; with a secret, the body carries `timestamp` and
`sign` = Base64(HMAC-SHA256(key="<timestamp>\\n<secret>", message=""))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from services.notifier.channels.base import Delivery, HttpSender, check_robot_answer, json_bytes


def payload(text: str, secret: str | None = None, now_s: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
    if secret is not None:
        ts = now_s if now_s is not None else int(time.time())
        key = f"{ts}\n{secret}".encode()
        body["timestamp"] = str(ts)
        body["sign"] = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return body


async def send(delivery: Delivery, http: HttpSender) -> None:
    assert delivery.rule.url is not None
    headers = {"Idempotency-Key": delivery.ctx.message_id}
    body = json_bytes(payload(delivery.text, delivery.secret))
    response = await http.post(delivery.rule.url, body, headers)
    check_robot_answer(response, "code", "StatusCode")
