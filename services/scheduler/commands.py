"""`sluice backfill`: ask the API for a backfill of a workflow over an interval.

Same conventions as the other client commands (`shared.client.commands`): SLUICE_API_URL,
SLUICE_TOKEN, `--workspace`/SLUICE_WORKSPACE, `--json`, exit codes 0 / 1 refused / 2 bad input /
3 unreachable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO
from urllib.parse import quote

from pydantic import ValidationError

from shared.client.commands import UsageError, execute
from shared.client.http import Client
from shared.models.backfills import BackfillGroupOut, BackfillOut, BackfillRequest
from shared.models.common import PRIORITIES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `sluice backfill` to the CLI."""
    summary = "run a workflow for every fire time of a past interval, as one backfill group"
    parser = subparsers.add_parser(
        "backfill",
        help=summary,
        description=(
            f"{summary[0].upper()}{summary[1:]}: one instance per fire time in [START, END] (one "
            "per day at midnight for workflows without a schedule), each with the cyctime and "
            "bizdate of its time."
        ),
    )
    parser.add_argument(
        "workflow",
        nargs="+",
        help="workflow name; several are backfilled together, upstream first, each day's "
        "dependants waiting for that day's upstream run",
    )
    parser.add_argument(
        "--start",
        required=True,
        help="first instant, ISO 8601 with offset: 2026-11-01T00:00+08:00, or first business "
        "date: 20261101 or 2026-11-01",
    )
    parser.add_argument(
        "--end", required=True, help="last instant or business date (inclusive), same formats"
    )
    parser.add_argument(
        "--parallelism", type=int, default=1, help="instances running at once (default 1)"
    )
    parser.add_argument("--priority", type=int, choices=PRIORITIES, help="priority of each run")
    parser.add_argument(
        "--order", choices=("asc", "desc"), default="asc", help="oldest (asc) or newest first"
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument(
        "-w", "--workspace", help="workspace (default: $SLUICE_WORKSPACE, else 'default')"
    )
    parser.set_defaults(func=lambda args: execute(backfill, args))


def backfill(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """POST .../workflows/{name}/backfill and print what was created."""
    try:
        request = BackfillRequest.model_validate(
            {
                "start": args.start,
                "end": args.end,
                "parallelism": args.parallelism,
                "priority": args.priority,
                "order": args.order,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        # Whole-request checks name their field in the message itself ("end: must not ...").
        message = first["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"invalid backfill: {where + ': ' if where else ''}{message}") from None
    workflows = [args.workflow] if isinstance(args.workflow, str) else list(args.workflow)
    body = request.model_dump(mode="json")
    if len(workflows) > 1:
        path = client.ws("/backfills")
        body = {**body, "workflows": workflows}
    else:
        path = client.ws(f"/workflows/{quote(workflows[0], safe='')}/backfill")
    # One Idempotency-Key per invocation: a retry after a lost answer creates no second group.
    answer: Any = client.post_once(path, body)
    if args.json:
        out.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    elif len(workflows) > 1:
        group = BackfillGroupOut.model_validate(answer)
        out.write("\n".join(_summary(b) for b in group.backfills))
    else:
        out.write(_summary(BackfillOut.model_validate(answer)))
    return 0


def _summary(out: BackfillOut) -> str:
    ids = out.instance_ids
    span = f"{ids[0]} .. {ids[-1]}" if ids else "-"
    states = ", ".join(f"{state} {count}" for state, count in sorted(out.states.items()))
    rows = [
        ("backfill", str(out.id)),
        ("workflow", out.workflow),
        ("interval", f"{out.start.isoformat()} .. {out.end.isoformat()}"),
        ("instances", f"{len(ids)} ({span}, in run order)"),
        ("states", states or "-"),
        ("order", out.order),
        ("parallelism", str(out.parallelism)),
        ("priority", "workflow default" if out.priority is None else str(out.priority)),
    ]
    width = max(len(key) for key, _ in rows)
    return "".join(f"{key:<{width}}  {value}\n" for key, value in rows)
