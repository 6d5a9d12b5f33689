"""What every `sluice` client command shares: exit codes, output, and running one command.

Every command talks to the HTTP API at SLUICE_API_URL (default http://127.0.0.1:8080) with
SLUICE_TOKEN, in the workspace SLUICE_WORKSPACE or `--workspace` (default `default`). Exit codes:
0 success; 1 the API refused the request (or a waited-for run did not succeed); 2 bad local
input; 3 the API could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from shared.client.http import DEFAULT_URL, Client, ClientError, Unreachable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


class UsageError(Exception):
    """Bad local input (a file, a flag value); exit code 2."""


Handler = Callable[[argparse.Namespace, Client, TextIO], int]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if isinstance(value, str) and _TIMESTAMP.match(text):
        # ISO timestamps from the API: seconds are precise enough for a table.
        text = text[:19].replace("T", " ")
    return text.replace("\n", " ")


def table(rows: Iterable[Sequence[Any]], header: Sequence[str], out: TextIO) -> None:
    """Print an aligned table; cells are never empty so columns split on whitespace."""
    cells = [[cell(c) for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [header, *cells]
    for line in lines:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def print_json(value: Any, out: TextIO) -> None:
    """The API's JSON as `--json` prints it: indented, non-ASCII kept."""
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def execute(handler: Handler, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one command with a client from the environment; errors become one stderr line."""
    url = os.environ.get("SLUICE_API_URL") or DEFAULT_URL
    token = os.environ.get("SLUICE_TOKEN")
    workspace = args.workspace or os.environ.get("SLUICE_WORKSPACE") or "default"
    stream = out or sys.stdout
    try:
        with Client(url, token, workspace) as client:
            return handler(args, client, stream)
    except Unreachable as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_UNREACHABLE
    except ClientError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        # `sluice logs ... | head`: the reader left; that is not an error of ours.
        return EXIT_OK
