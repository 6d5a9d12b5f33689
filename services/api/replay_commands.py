"""`sluice replay TRIGGER --from A --to B [--mode missing|all] [--wait]`: re-read a source.

`--from`/`--to` take ISO-8601 times with a zone (`2026-11-01T00:00:00Z`), or for Kafka triggers
offsets per partition as `PARTITION:OFFSET[,PARTITION:OFFSET...]` (`0:100,1:250`). The command
prints `replay ID STATE`; with `--wait` it follows the job until it ends, prints its counts and
exits 1 unless it succeeded. Same environment and exit codes as the other client commands.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any, TextIO
from urllib.parse import quote

from shared.client.commands import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    execute,
    positive_int,
    print_json,
)
from shared.client.http import Client, ClientError

WAIT_POLL_S = 0.5
FINAL = ("succeeded", "failed")
COUNTS = ("read", "admitted", "duplicate", "filtered", "other")
_OFFSETS = re.compile(r"^\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*$")


def bound_arg(flag: str, text: str) -> Any:
    """A range end: `P:O,...` as an offset map, anything else as a time for the API to check."""
    if ":" in text and _OFFSETS.match(text):
        offsets: dict[str, int] = {}
        for item in text.split(","):
            partition, _, offset = item.partition(":")
            key = str(int(partition))
            if key in offsets:
                raise UsageError(f"{flag}: partition {key} is given twice")
            offsets[key] = int(offset)
        return offsets
    return text


def counts_line(replay: dict[str, Any]) -> str:
    """`read 8, admitted 3, duplicate 5, filtered 0, other 0`."""
    return ", ".join(f"{k} {replay[k]}" for k in COUNTS)


def _replay(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    body: dict[str, Any] = {
        "from": bound_arg("--from", args.from_),
        "to": bound_arg("--to", args.to),
        "mode": args.mode,
    }
    if args.max_events is not None:
        body["max_events"] = args.max_events
    trigger = quote(args.trigger, safe="")
    accepted = client.post(client.ws(f"/triggers/{trigger}/replay"), body)
    replay_id = accepted["replay_id"]
    if not args.wait:
        if args.json:
            print_json(accepted, out)
        else:
            out.write(f"replay {replay_id} {accepted['state']}\n")
        return EXIT_OK
    if not args.json:
        out.write(f"replay {replay_id} {accepted['state']}\n")
        out.flush()
    replay = _wait(client, replay_id, args.timeout, None if args.json else out)
    if args.json:
        print_json(replay, out)
    else:
        if replay["error"]:
            out.write(f"replay {replay_id}: {replay['error']}\n")
        out.write(f"replay {replay_id}: {counts_line(replay)}\n")
        out.write(f"replay {replay_id} {replay['state']}\n")
    return EXIT_OK if replay["state"] == "succeeded" else EXIT_FAILED


def _wait(
    client: Client, replay_id: int, timeout: float | None, progress: TextIO | None
) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = ""
    while True:
        replay: dict[str, Any] = client.get(client.ws(f"/replays/{replay_id}"))
        if replay["state"] in FINAL:
            return replay
        line = f"replay {replay_id} {replay['state']}: {counts_line(replay)}"
        if progress is not None and line != shown:
            progress.write(line + "\n")
            progress.flush()
            shown = line
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError(f"replay {replay_id} is still {replay['state']} after {timeout:g}s")
        time.sleep(WAIT_POLL_S)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `sluice replay` to the `sluice` parser."""
    summary = "re-admit what a Kafka topic or S3 bucket held in a range, for one trigger"
    p = subparsers.add_parser("replay", help=summary, description=summary)
    p.add_argument("trigger", help="trigger name (kafka or s3)")
    p.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="TIME|P:O,...",
        help="start, included: ISO-8601 time with zone, or Kafka offsets 0:100,1:250",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="TIME|P:O,...",
        help="end, excluded: same form as --from",
    )
    p.add_argument(
        "--mode",
        choices=("missing", "all"),
        default="missing",
        help="missing (default): only records never admitted; all: run every record again",
    )
    p.add_argument("--max-events", type=positive_int, help="fail if the range holds more records")
    p.add_argument(
        "--wait", action="store_true", help="follow the replay; exit 1 unless it succeeded"
    )
    p.add_argument(
        "--timeout", type=float, metavar="S", help="with --wait: give up after S seconds"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.add_argument(
        "-w", "--workspace", help="workspace (default: $SLUICE_WORKSPACE, else 'default')"
    )
    p.set_defaults(func=lambda args: execute(_replay, args))
