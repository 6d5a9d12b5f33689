"""Notification latency benchmark: from the state change to the receiver.

An executor (`python -m services.executor`) and a notifier (`python -m services.notifier`) run as
real processes against an embedded PostgreSQL (or `SLUICE_BENCH_DATABASE_URL`). Instances of a
one-node workflow whose node fails at once (`exit 1`) are queued at an offered rate; the
workflow's `policy.notify` sends `failure` to a webhook served by this process on 127.0.0.1.
Prints one JSON line:

- `notify_latency`: per message, from the node's attempt end (database clock, same host) to the
  webhook request's arrival (`event_to_delivery`), and from the outbox row's creation to the row
  being marked `sent` (`outbox_to_sent`), p50/p99/max; plus how many arrived more than once.

    python -m bench.notify [--instances 200] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, executor_processes, fresh_database, postgres_server
from bench.common import sluice_env as bench_env
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import create_pool
from shared.models.workflows import WorkflowSpec

WORKSPACE = 1


class Receiver:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrivals: dict[str, float] = {}
        self.seen: Counter[str] = Counter()
        self.all_in = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            headers = dict(
                line.split(":", 1)
                for line in head.decode("latin-1").split("\r\n")[1:]
                if ":" in line
            )
            lengths = {k.strip().lower(): v.strip() for k, v in headers.items()}
            body = await reader.readexactly(int(lengths.get("content-length", "0")))
            message_id = json.loads(body)["id"]
            self.seen[message_id] += 1
            self.arrivals.setdefault(message_id, arrived)
            if len(self.arrivals) >= self.expected:
                self.all_in.set()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


def percentiles(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(values_s)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2)}


async def bench(instances: int, rate: float) -> dict[str, Any]:
    receiver = Receiver(instances)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with postgres_server() as server_dsn, tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(server_dsn, "bench_notify") as dsn:
            pool = await create_pool(dsn, min_size=1, max_size=4)
            spec = WorkflowSpec.model_validate(
                {
                    "name": "fails",
                    "type": "manual",
                    "policy": {
                        "notify": [
                            {
                                "on": ["failure"],
                                "channel": "webhook",
                                "url": f"http://127.0.0.1:{port}/hook",
                            }
                        ]
                    },
                    "nodes": [{"name": "n", "type": "shell", "code": "exit 1"}],
                }
            )
            async with pool.acquire() as conn:
                saved = await workflow_repo.save(conn, WORKSPACE, spec, publish=True)
                version = await workflow_repo.load_version(conn, saved.workflow.id, saved.version)
            log_dir = Path(tmp)
            env = {"SLUICE_NOTIFY_ALLOW_PRIVATE": "true", "SLUICE_NOTIFY_POLL_INTERVAL_S": "1"}
            with (log_dir / "notifier.log").open("ab") as out:
                notifier = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "services.notifier",
                    cwd=str(ROOT),
                    env=bench_env(dsn, **env),
                    stdout=out,
                    stderr=out,
                )
            try:
                async with executor_processes(dsn, 1, log_dir):
                    for _ in range(instances):
                        item = NewInstance(version=version, kind="api", cyctime=datetime.now(UTC))
                        async with pool.acquire() as conn, conn.transaction():
                            await create_instances(conn, [item])
                            await conn.execute("SELECT pg_notify('sluice_instances', '')")
                        await asyncio.sleep(1 / rate)
                    deadline = time.monotonic() + 120
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(receiver.all_in.wait(), 120)
                    while time.monotonic() < deadline:
                        pending = await pool.fetchval(
                            "SELECT count(*) FROM notifications WHERE state <> 'sent'"
                        )
                        if not pending:
                            break
                        await asyncio.sleep(0.1)
            finally:
                notifier.terminate()
                await notifier.wait()
            rows = await pool.fetch(
                """SELECT x.message_id::text AS id,
                          extract(epoch FROM a.finished_at)::float8 AS changed,
                          extract(epoch FROM x.sent_at - x.created_at)::float8 AS outbox_to_sent
                   FROM notifications x
                   JOIN node_instances n ON n.instance_id = x.instance_id
                   JOIN attempts a ON a.node_instance_id = n.id"""
            )
            await pool.close()
    server.close()
    to_delivery = [
        receiver.arrivals[r["id"]] - r["changed"] for r in rows if r["id"] in receiver.arrivals
    ]
    return {
        "scenario": "notify_latency",
        "instances": instances,
        "rate_per_s": rate,
        "delivered": len(receiver.arrivals),
        "repeats": sum(c - 1 for c in receiver.seen.values()),
        "event_to_delivery": percentiles(to_delivery),
        "outbox_to_sent": percentiles([r["outbox_to_sent"] for r in rows if r["outbox_to_sent"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    emit(asyncio.run(bench(args.instances, args.rate)))


if __name__ == "__main__":
    main()
