"""E-mail over SMTP through a workspace connection of kind `smtp` (aiosmtplib).

Connection `config`: `host`, `port` (default 587 for starttls, 465 for tls, 25 for none),
`tls` (`starttls` default | `tls` implicit TLS | `none`), `from`, optional `user` and
`verify` (default true: certificates are checked); `secrets.password`. The message is
multipart: the text as written, and an HTML part in which everything is escaped.
Message-ID is `<message id@sluice>`, the same on every try.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from services.notifier.channels.base import Delivery, DeliveryError, PermanentError
from services.notifier.templates import escape_html

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def _one_line(text: str) -> str:
    # Header values never carry line breaks (no header injection through a workflow name).
    return " ".join(text.split())[:250]


def build(delivery: Delivery, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = _one_line(delivery.ctx.subject)
    message["From"] = sender
    message["To"] = ", ".join(delivery.rule.to or [])
    message["Message-ID"] = f"<{delivery.ctx.message_id}@sluice>"
    message["Date"] = formatdate(delivery.ctx.created_at.timestamp(), usegmt=True)
    message.set_content(delivery.text)
    message.add_alternative(
        f'<!doctype html><html><body><p style="font-family:monospace">'
        f"{escape_html(delivery.text)}</p></body></html>",
        subtype="html",
    )
    return message


def smtp_options(config: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    """aiosmtplib keywords from the connection; a bad field is a PermanentError naming it."""
    host = config.get("host")
    if not isinstance(host, str) or not host:
        raise PermanentError("smtp connection: config.host is required")
    tls = config.get("tls", "starttls")
    if tls not in _DEFAULT_PORTS:
        raise PermanentError("smtp connection: config.tls must be starttls, tls or none")
    port = config.get("port", _DEFAULT_PORTS[tls])
    if not isinstance(port, int) or not 0 < port < 65536:
        raise PermanentError("smtp connection: config.port must be a port number")
    user = config.get("user")
    password = secrets.get("password")
    if (user is None) != (password is None):
        raise PermanentError("smtp connection: config.user and secrets.password go together")
    return {
        "hostname": host,
        "port": port,
        "use_tls": tls == "tls",
        "start_tls": tls == "starttls",
        "username": user,
        "password": password,
        "validate_certs": bool(config.get("verify", True)),
    }


async def send(delivery: Delivery, timeout_s: float) -> None:
    if delivery.smtp is None:
        raise PermanentError("email: the rule's smtp connection is missing")
    config, secrets = delivery.smtp.config, delivery.smtp.secrets
    sender = config.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        raise PermanentError("smtp connection: config.from must be an address")
    options = smtp_options(config, secrets)
    try:
        await aiosmtplib.send(
            build(delivery, _one_line(sender)),
            recipients=list(delivery.rule.to or []),
            timeout=timeout_s,
            **options,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP authentication failed: {exc.code}") from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from None
