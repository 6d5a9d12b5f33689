"""Generic webhook: a JSON body, `Idempotency-Key` = message id, and an HMAC-SHA256 signature
`X-Sluice-Signature: sha256=<hex>` over the exact body when the rule names a secret."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from services.notifier.channels.base import Delivery, HttpSender, json_bytes
from services.notifier.templates import MessageContext


def payload(ctx: MessageContext, text: str) -> dict[str, Any]:
    return {
        "id": ctx.message_id,
        "event": ctx.event,
        "workspace": ctx.workspace,
        "workflow": ctx.workflow,
        "version": ctx.version,
        "instance_id": ctx.instance_id,
        "node": ctx.node,
        "state": ctx.state,
        "reason": ctx.reason,
        "attempt": ctx.attempt,
        "exit_code": ctx.exit_code,
        "duration_s": ctx.duration_s,
        "url": ctx.url,
        "log_tail": ctx.log_tail,
        "occurred_at": ctx.created_at.isoformat(),
        "text": text,
    }


def signature(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


async def send(delivery: Delivery, http: HttpSender) -> None:
    body = json_bytes(payload(delivery.ctx, delivery.text))
    headers = {"Idempotency-Key": delivery.ctx.message_id}
    if delivery.secret is not None:
        headers["X-Sluice-Signature"] = signature(delivery.secret, body)
    assert delivery.rule.url is not None
    await http.post(delivery.rule.url, body, headers)
