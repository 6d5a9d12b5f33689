"""DingTalk custom robot: a `text` message (never rendered as Markdown); with a secret, the
URL carries `timestamp` and `sign` = Base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>"))."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote_plus

from services.notifier.channels.base import Delivery, HttpSender, check_robot_answer, json_bytes


def payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": text}}


def signed_url(url: str, secret: str, now_ms: int) -> str:
    to_sign = f"{now_ms}\n{secret}".encode()
    sign = base64.b64encode(hmac.new(secret.encode(), to_sign, hashlib.sha256).digest())
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}timestamp={now_ms}&sign={quote_plus(sign.decode())}"


async def send(delivery: Delivery, http: HttpSender) -> None:
    assert delivery.rule.url is not None
    url = delivery.rule.url
    if delivery.secret is not None:
        url = signed_url(url, delivery.secret, int(time.time() * 1000))
    headers = {"Idempotency-Key": delivery.ctx.message_id}
    response = await http.post(url, json_bytes(payload(delivery.text)), headers)
    check_robot_answer(response, "errcode")
