"""Storage-listener benchmarks: webhook intake rate and upload → node-start latency.

Runs `sluice run storage-listener` and `sluice run executor` as real processes against an embedded
PostgreSQL (or `SLUICE_BENCH_DATABASE_URL`, a server this may create a database on) and an
embedded moto S3/SQS, and prints one JSON line per scenario:

- `webhook_intake`: N distinct MinIO notifications POSTed with C concurrent connections → requests/s
  (each request answered only after its instance committed) and request latency percentiles.
- `webhook_redelivery`: the same N notifications again → all duplicates, requests/s.
- `webhook_keepalive`: K new notifications, then K `GET /healthz`, sent one after another on ONE
  keep-alive connection (how MinIO and Ceph targets deliver) → milliseconds per request.
- `webhook_to_node_start`: notifications POSTed at an offered rate → p50/p99 from the POST to the
  start of the workflow's (trivial) node attempt.
- `upload_to_node_start`: objects uploaded to moto S3 (notifications to SQS, read by the listener)
  at an offered rate → p50/p99 from the upload to the node attempt start. moto's long poll and
  its per-request queue scan are part of this figure; they are not S3's.

    python bench/webhook.py [--requests 5000] [--concurrency 64] [--rate 50] [--latency-n 300]
                            [--keepalive-n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.common import BENCH_SECRET_KEY
from services.dev.servers.postgres import EmbeddedPostgres, with_database
from services.dev.servers.process import free_port
from services.dev.servers.s3 import EmbeddedS3, ensure_bucket, ensure_queue, notify_queue
from shared.db.migrate import migrate
from shared.db.pool import connect, create_pool

ROOT = Path(__file__).resolve().parents[1]
SLUICE = str(Path(sys.executable).with_name("sluice"))
TOKEN = "bench-token"
BUCKET = "bench-data"
DATABASE = "sluice_bench_webhook"


def minio_body(key: str, etag: str) -> bytes:
    """A MinIO webhook body (the shape MinIO documents) for one uploaded object."""
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-21T12:00:00.000Z",
        "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"principalId": "bench"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": etag[:16]},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": {
                "key": key.replace("/", "%2F"),
                "size": 42,
                "eTag": etag,
                "contentType": "text/csv",
                "sequencer": etag[:16].upper(),
            },
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "bench"},
    }
    return json.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{BUCKET}/{key}", "Records": [record]}
    ).encode()


def percentiles(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(values_s)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A fresh, migrated database on the bench server."""
    external = os.environ.get("SLUICE_BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        server = None
        if external:
            admin_dsn = external
        else:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            admin_dsn = server.start()
        try:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {DATABASE}")
            await admin.close()
            dsn = with_database(admin_dsn, DATABASE)
            conn = await connect(dsn)
            await migrate(conn)
            await conn.close()
            yield dsn
        finally:
            if server is not None:
                server.stop()


async def setup_workflow(pool: asyncpg.Pool[Any]) -> None:
    from shared.db import triggers as trigger_repo
    from shared.db import workflows as workflow_repo
    from shared.db.triggers import SPEC_ADAPTER
    from shared.models.triggers import S3TriggerSpec
    from shared.models.workflows import WorkflowSpec

    trigger = SPEC_ADAPTER.validate_python(
        {"name": "bench_files", "type": "s3", "bucket": BUCKET, "key_pattern": "input/**"}
    )
    assert isinstance(trigger, S3TriggerSpec)
    spec = WorkflowSpec.model_validate(
        {
            "name": "bench_wf",
            "type": "triggered",
            "trigger": "bench_files",
            "policy": {"max_parallel_instances": None},
            "nodes": [{"name": "noop", "type": "shell", "code": "true", "upstream": []}],
        }
    )
    async with pool.acquire() as conn:
        await trigger_repo.upsert(conn, "default", 1, trigger)
        await workflow_repo.save(conn, 1, spec, publish=True)


@asynccontextmanager
async def service(name: str, env: dict[str, str], log: Path) -> AsyncIterator[None]:
    # Every `sluice run` process serves its probes on a port of its own.
    env = {**env, "SLUICE_METRICS_PORT": str(free_port())}
    with log.open("wb") as sink:
        # Blocking spawn in async code: it takes a moment, and waiting on it happens in threads.
        process = subprocess.Popen(  # noqa: ASYNC220
            [SLUICE, "run", name], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink
        )
        try:
            yield
        finally:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def bench_intake(
    url: str, n: int, concurrency: int, offset: int, label: str
) -> dict[str, Any]:
    bodies = [minio_body(f"input/f{i}.csv", f"{i:032x}") for i in range(offset, offset + n)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                sent = time.perf_counter()
                async with session.post(f"{url}/hooks/s3", data=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "scenario": label,
        "requests": n,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 1),
        "statuses": statuses,
        **percentiles(latencies),
    }


async def bench_keepalive(url: str, n: int, offset: int) -> list[dict[str, Any]]:
    """Back-to-back requests on one connection: each waits for the previous answer."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    results = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for label in ("POST /hooks/s3", "GET /healthz"):
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            for i in range(offset, offset + n):
                sent = time.perf_counter()
                if label == "GET /healthz":
                    request = session.get(f"{url}/healthz")
                else:
                    body = minio_body(f"keepalive/f{i}.csv", f"{i:032x}")
                    request = session.post(f"{url}/hooks/s3", data=body, headers=headers)
                async with request as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - sent)
            results.append(
                {
                    "scenario": "webhook_keepalive",
                    "request": label,
                    "requests": n,
                    "connections": 1,
                    "statuses": statuses,
                    **percentiles(latencies),
                }
            )
    return results


async def batch_sizes(url: str) -> dict[str, Any]:
    """How many events the listener admitted per transaction so far (its own metric)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as r:
        text = await r.text()
    values = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f"sluice_storage_admit_batch_events_{name} "):
                values[name] = float(line.split()[1])
    count = values.get("count", 0)
    return {
        "scenario": "webhook_intake_transactions",
        "transactions": int(count),
        "events_per_transaction": round(values.get("sum", 0) / count, 2) if count else None,
    }


async def node_starts(pool: asyncpg.Pool[Any], keys: list[str]) -> dict[str, float]:
    """Attempt start (epoch seconds, database clock) per object key, for keys that started."""
    rows = await pool.fetch(
        "SELECT i.trigger_message->'data'->'s3'->'object'->>'key' AS key, "
        "extract(epoch FROM min(a.started_at)) AS started "
        "FROM instances i JOIN node_instances n ON n.instance_id = i.id "
        "JOIN attempts a ON a.node_instance_id = n.id "
        "WHERE i.trigger_message->'data'->'s3'->'object'->>'key' = ANY($1::text[]) "
        "GROUP BY 1",
        keys,
    )
    return {r["key"]: float(r["started"]) for r in rows}


async def offered(rate: float, n: int, send: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Call `send(i)` for i < n at `rate` per second (open loop: late sends do not slow it)."""
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)


async def bench_latency(
    pool: asyncpg.Pool[Any],
    label: str,
    rate: float,
    n: int,
    prefix: str,
    send: Callable[[str], Awaitable[None]],
    via: str,
) -> dict[str, Any]:
    # Warm-up (not measured): the executor has started and every connection is open.
    warmup = [f"input/{prefix}-warmup{i}.csv" for i in range(5)]
    for key in warmup:
        await send(key)

    async def warmed() -> bool:
        return len(await node_starts(pool, warmup)) == len(warmup)

    await wait_until(warmed)
    sent: dict[str, float] = {}
    keys = [f"input/{prefix}{i}.csv" for i in range(n)]

    async def one(i: int) -> None:
        sent[keys[i]] = time.time()
        await send(keys[i])

    await offered(rate, n, one)

    async def all_started() -> bool:
        return len(await node_starts(pool, keys)) == n

    await wait_until(all_started)
    starts = await node_starts(pool, keys)
    return {
        "scenario": label,
        "via": via,
        "offered_per_s": rate,
        "n": n,
        **percentiles([starts[k] - sent[k] for k in keys]),
    }


async def main(args: argparse.Namespace) -> None:
    async with database() as dsn, EmbeddedS3() as s3:
        pool = await create_pool(dsn, max_size=4)
        await setup_workflow(pool)
        async with s3.client("sqs") as sqs, s3.client("s3") as s3_client:
            queue = await ensure_queue(sqs, "bench-events")
            await ensure_bucket(s3_client, BUCKET)
            await notify_queue(s3_client, BUCKET, queue.arn, events=("s3:ObjectCreated:*",))
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
            env.update(s3.environment())
            env.update(
                SLUICE_DATABASE_URL=dsn,
                SLUICE_HOST="127.0.0.1",
                SLUICE_WEBHOOK_PORT=str(port),
                SLUICE_WEBHOOK_TOKENS=TOKEN,
                SLUICE_SQS_QUEUE_URLS=queue.url,
                SLUICE_LOG_LEVEL="warning",
                SLUICE_LOG_FORMAT="json",
                SLUICE_DB_POOL_MAX="10",
                # The executor refuses to start without one (connection secrets).
                SLUICE_SECRET_KEY=BENCH_SECRET_KEY,
            )
            url = f"http://127.0.0.1:{port}"
            logs = Path(tempfile.mkdtemp(prefix="sluice-bench-logs-"))
            sys.stderr.write(f"service logs: {logs}\n")
            async with service("storage-listener", env, logs / "listener.log"):

                async def ready() -> bool:
                    try:
                        async with (
                            aiohttp.ClientSession() as session,
                            session.get(f"{url}/readyz") as r,
                        ):
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_until(ready)
                if args.keepalive_n:
                    for result in await bench_keepalive(url, args.keepalive_n, 10**7):
                        emit(result)
                if args.requests:
                    emit(
                        await bench_intake(
                            url, args.requests, args.concurrency, 0, "webhook_intake"
                        )
                    )
                    emit(await batch_sizes(url))
                    emit(
                        await bench_intake(
                            url, args.requests, args.concurrency, 0, "webhook_redelivery"
                        )
                    )
                if args.latency_n:
                    async with service("executor", env, logs / "executor.log"):
                        headers = {"Authorization": f"Bearer {TOKEN}"}
                        async with aiohttp.ClientSession() as session:

                            async def post(key: str) -> None:
                                body = minio_body(key, os.urandom(16).hex())
                                async with session.post(
                                    f"{url}/hooks/s3", data=body, headers=headers
                                ) as r:
                                    await r.read()

                            emit(
                                await bench_latency(
                                    pool,
                                    "webhook_to_node_start",
                                    args.rate,
                                    args.latency_n,
                                    "hook",
                                    post,
                                    "POST /hooks/s3",
                                )
                            )

                        async def upload(key: str) -> None:
                            await s3_client.put_object(Bucket=BUCKET, Key=key, Body=key.encode())

                        emit(
                            await bench_latency(
                                pool,
                                "upload_to_node_start",
                                args.rate,
                                args.latency_n,
                                "up",
                                upload,
                                "moto S3 -> SQS -> storage-listener",
                            )
                        )
        await pool.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="intake requests (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=50, help="offered events/s for latency")
    parser.add_argument("--latency-n", type=int, default=300, help="latency samples (0: skip)")
    parser.add_argument(
        "--keepalive-n", type=int, default=200, help="requests on one connection (0: skip)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
