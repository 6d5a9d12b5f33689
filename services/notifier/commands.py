"""`sluice notifications`: list the notification outbox, or send a test message through a rule.

Same conventions as the other client commands (`shared.client.commands`): SLUICE_API_URL,
SLUICE_TOKEN, `--workspace`/SLUICE_WORKSPACE, `--json`, exit codes 0 / 1 refused / 2 bad input /
3 unreachable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from shared import spec_yaml
from shared.client.commands import UsageError, execute, table
from shared.client.http import Client
from shared.models.notifications import NotifyRule

STATES = ("pending", "sent", "dead")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `sluice notifications` to the CLI."""
    summary = "list notifications (newest first), or send a test message through a rule"
    parser = subparsers.add_parser("notifications", help=summary, description=summary)
    parser.add_argument("--state", choices=STATES, help="only this state (dead: given up)")
    parser.add_argument("--instance", type=int, help="only this instance's notifications")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument(
        "--test",
        metavar="RULE|@FILE",
        help='send a test message through a rule, e.g. \'{"channel": "webhook", "url": ...}\'',
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument(
        "-w", "--workspace", help="workspace (default: $SLUICE_WORKSPACE, else 'default')"
    )
    parser.set_defaults(func=lambda args: execute(notifications, args))


def _rule(value: str) -> NotifyRule:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
    else:
        text = value
    try:
        data = spec_yaml.load(text)
    except spec_yaml.YAMLError:
        raise UsageError("--test: not valid JSON or YAML") from None
    if isinstance(data, dict):
        data.setdefault("on", ["failure"])
    try:
        return NotifyRule.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise UsageError(f"--test: {where + ': ' if where else ''}{message}") from None


def notifications(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.test is not None:
        rule = _rule(args.test)
        answer: Any = client.post(
            client.ws("/notifications/test"), {"rule": rule.model_dump(exclude_none=True)}
        )
        if args.json:
            out.write(json.dumps(answer, indent=2) + "\n")
        else:
            out.write(f"queued test notification {answer['id']}\n")
        return 0
    if args.limit < 1:
        raise UsageError("--limit: must be at least 1")
    answer = client.get(
        client.ws("/notifications"), state=args.state, instance=args.instance, limit=args.limit
    )
    items: list[dict[str, Any]] = answer["items"]
    if args.json:
        out.write(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
        return 0
    table(
        (
            (
                n["id"],
                n["state"],
                n["event"],
                n["channel"],
                n["workflow"],
                n["instance_id"],
                n["node"],
                n["attempts"],
                n["sent_at"] or n["next_at"],
                (n["last_error"] or "")[:60] or None,
            )
            for n in items
        ),
        ("ID", "STATE", "EVENT", "CHANNEL", "WORKFLOW", "INSTANCE", "NODE", "TRIES", "AT", "ERROR"),
        out,
    )
    return 0
