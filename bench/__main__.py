"""`python -m bench [--quick]`: every scenario, one after another, then one table.

Each scenario runs as its own process (`python -m bench.<name> ...`) so one that fails does not
stop the others; its JSON lines are kept, its other output goes to a log file. The table
(`bench.table`) puts each figure next to the floor measured in the same run and its target.
`--json FILE` also writes every result line to FILE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.table import markdown, rows

# (scenario module, arguments for --quick, arguments for the full size)
SCENARIOS: list[tuple[str, list[str], list[str]]] = [
    ("baseline", ["--rows", "2000", "--spawns", "200", "--kafka-messages", "5000"], []),
    ("latency", ["--messages", "300"], []),
    ("intake", ["--messages", "5000"], []),
    ("dispatch", ["--instances", "2000"], []),
    ("webhook", ["--requests", "1000", "--latency-n", "100", "--keepalive-n", "100"], []),
    ("scale", ["--quick"], []),
    ("memory", ["--quick"], []),
]


def run_scenario(name: str, args: list[str], log: Path) -> list[dict[str, Any]]:
    started = time.monotonic()
    sys.stderr.write(f"bench: {name} {' '.join(args)}\n")
    with log.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    results = []
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            results.append(record)
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}, see {log}"
    sys.stderr.write(f"bench: {name}: {status} in {time.monotonic() - started:.0f} s\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="laptop sizes (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=[s[0] for s in SCENARIOS], default=None)
    parser.add_argument("--json", type=Path, help="also write every result line here")
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    results: list[dict[str, Any]] = []
    for name, quick, full in SCENARIOS:
        if args.only and name not in args.only:
            continue
        results.extend(run_scenario(name, quick if args.quick else full, logs / f"{name}.log"))
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
    print(markdown(rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
