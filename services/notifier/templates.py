"""Message texts: a default per event, or a user template over the parameter variables.

Pure: no I/O. Substitution is one pass over the template; a value is inserted as text and
never scanned again, so a value holding `${...}`, HTML, Markdown or JSON stays exactly that
text. Escaping for the target format is applied to the whole rendered text (the template is
plain text too), so no part of a message can become markup.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")

TITLES: dict[str, str] = {
    "start": "started",
    "success": "succeeded",
    "failure": "failed",
    "timeout": "timed out",
    "retry": "will retry",
    "terminated": "terminated",
    "sla_miss": "missed its SLA",
    "test": "test message",
}


@dataclass(frozen=True)
class MessageContext:
    """What a message can say about the state change that raised it."""

    message_id: str
    event: str
    workspace: str
    created_at: datetime
    workflow: str | None = None
    version: int | None = None
    instance_id: int | None = None
    node: str | None = None
    state: str | None = None
    reason: str | None = None
    attempt: int | None = None
    exit_code: int | None = None
    duration_s: float | None = None
    url: str | None = None
    log_tail: str | None = None
    bizdate: str | None = None
    cyctime: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        what = self.workflow or "sluice"
        if self.node:
            what += f" / {self.node}"
        return f"[sluice] {what} {TITLES.get(self.event, self.event)}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def variables(ctx: MessageContext) -> dict[str, str]:
    """The names a user template may use: the instance's parameters and the built-ins."""
    values: dict[str, str] = {name: _text(v) for name, v in ctx.parameters.items()}
    values.update(
        {
            "event": ctx.event,
            "title": TITLES.get(ctx.event, ctx.event),
            "workspace": ctx.workspace,
            "workflow.name": ctx.workflow or "",
            "workflow.instanceId": _text(ctx.instance_id),
            "workflow.version": _text(ctx.version),
            "node.name": ctx.node or "",
            "state": ctx.state or "",
            "reason": ctx.reason or "",
            "attempt": _text(ctx.attempt),
            "exit_code": _text(ctx.exit_code),
            "duration": format_duration(ctx.duration_s),
            "url": ctx.url or "",
            "log_tail": ctx.log_tail or "",
            "bizdate": ctx.bizdate or "",
            "cyctime": ctx.cyctime or "",
            "message_id": ctx.message_id,
        }
    )
    return values


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def substitute(template: str, values: dict[str, str]) -> str:
    """Replace known `${name}` placeholders in one pass; unknown ones stay as written."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def default_text(ctx: MessageContext) -> str:
    """The default message: what happened, where, why, how long, and a link."""
    lines = [ctx.subject]
    if ctx.instance_id is not None:
        lines.append(f"Instance: {ctx.instance_id}" + (f" ({ctx.state})" if ctx.state else ""))
    if ctx.attempt:
        lines.append(f"Attempt: {ctx.attempt}")
    if ctx.reason:
        lines.append(f"Reason: {ctx.reason}")
    if ctx.exit_code is not None:
        lines.append(f"Exit code: {ctx.exit_code}")
    if ctx.duration_s is not None:
        lines.append(f"Duration: {format_duration(ctx.duration_s)}")
    if ctx.url:
        lines.append(f"Link: {ctx.url}")
    if ctx.log_tail:
        lines.append("Log tail:")
        lines.append(ctx.log_tail.rstrip("\n"))
    return "\n".join(lines)


def render(ctx: MessageContext, template: str | None) -> str:
    """The plain text of a message (unescaped: escape it for the channel's format)."""
    if template is None:
        return default_text(ctx)
    return substitute(template, variables(ctx))


def escape_slack(text: str) -> str:
    """Slack's control characters; the message is also sent with `mrkdwn: false`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_html(text: str) -> str:
    """Text as HTML: every markup character escaped, line breaks kept."""
    return html.escape(text, quote=True).replace("\n", "<br>\n")
