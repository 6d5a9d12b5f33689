"""What every channel gets, how it fails, and the guarded HTTP POST the robot channels share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from services.notifier.ssrf import Refused, resolve
from services.notifier.templates import MessageContext
from shared.db.connections import ResolvedConnection
from shared.models.notifications import NotifyRule


class DeliveryError(Exception):
    """The receiver did not take the message; it is tried again after a backoff."""


class PermanentError(DeliveryError):
    """Trying again cannot help (refused URL, bad connection): the message is dead at once."""


@dataclass(frozen=True)
class Delivery:
    """One message to send through one rule. `secret` is the key of the rule's secret
    connection; `smtp` the resolved smtp connection (email). Neither is ever logged."""

    ctx: MessageContext
    rule: NotifyRule
    text: str
    secret: str | None = None
    smtp: ResolvedConnection | None = None

    def __repr__(self) -> str:
        return f"Delivery(message_id={self.ctx.message_id!r}, channel={self.rule.channel!r})"


def json_bytes(payload: Any) -> bytes:
    """Compact JSON; `ensure_ascii` keeps the body 7-bit whatever the values hold."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


class HttpSender:
    """POSTs to checked addresses only (see ssrf.py); never follows redirects."""

    def __init__(self, client: httpx.AsyncClient, *, allow_private: bool) -> None:
        self.client = client
        self.allow_private = allow_private

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        try:
            targets = await resolve(url, allow_private=self.allow_private)
        except Refused as exc:
            raise PermanentError(str(exc)) from None
        except OSError as exc:
            raise DeliveryError(str(exc)) from None
        response: httpx.Response | None = None
        error = ""
        for target in targets:
            extensions = {"sni_hostname": target.server_name} if target.server_name else {}
            try:
                response = await self.client.post(
                    target.url,
                    content=body,
                    headers={
                        **headers,
                        "Host": target.host_header,
                        "Content-Type": "application/json",
                        "User-Agent": "sluice-notifier",
                    },
                    extensions=extensions,
                    follow_redirects=False,
                )
                break
            except httpx.ConnectError as exc:
                # Nothing was sent: the next checked address of the host may answer.
                error = f"ConnectError: {exc}"
            except httpx.HTTPError as exc:
                raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if response is None:
            raise DeliveryError(error or "no address to connect to")
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code} from the receiver")
        return response


def check_robot_answer(response: httpx.Response, *keys: str) -> None:
    """Robot APIs answer HTTP 200 with an error code in the body; non-zero is a failure."""
    try:
        answer = response.json()
    except ValueError:
        return
    if not isinstance(answer, dict):
        return
    for key in keys:
        code = answer.get(key)
        if code not in (None, 0, "0"):
            message = answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage")
            raise DeliveryError(f"receiver answered {key}={code}: {str(message)[:200]}")
