"""Kafka latency benchmark.

`sluice run kafka-listener` and `sluice run executor` run as real processes against an embedded
PostgreSQL (or `SLUICE_BENCH_DATABASE_URL`) and an embedded Tansu broker. Records are produced
at an offered rate (open loop) to a topic whose trigger starts a trivial one-node workflow
(shell `true`). Prints one JSON line per scenario:

- `baseline_kafka_latency`: produce → a bare aiokafka consumer's `getmany()` at the same rate
  and `fetch_max_wait_ms`: the broker and client floor.
- `kafka_latency`: per record, from just before the produce call to (database clock, same host)
  the instance row's creation (`event_to_admitted`), its node attempt's start
  (`event_to_node_start`) and the instance's success (`event_to_succeeded`), p50/p99/max.
- `kafka_listener_idle_cpu`: the listener's CPU use while subscribed and idle (the cost of
  short fetch waits), in percent of one core.

    python -m bench.latency [--rate 100] [--messages 1000] [--fetch-max-wait-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import emit
from bench.intake import SLUICE, Assigned, bind_workflow, database, listener_env, note, poll
from services.dev.servers.kafka import EmbeddedKafka, create_topics
from shared.db.pool import create_pool

TOPIC = "bench-latency"
BASELINE_TOPIC = "bench-latency-baseline"
WARMUP = 20


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


async def offered(rate: float, count: int, send: Any) -> None:
    """Call `send(i)` for i < count at `rate` per second; late sends do not slow the schedule."""
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)


async def baseline(bootstrap: str, rate: float, count: int, fetch_wait_ms: int) -> dict[str, Any]:
    """Produce → bare consumer latency at the offered rate."""
    await create_topics(bootstrap, [BASELINE_TOPIC])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=2000,
        heartbeat_interval_ms=100,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1)
    await consumer.start()
    await producer.start()
    assigned = Assigned()
    consumer.subscribe([BASELINE_TOPIC], listener=assigned)
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    try:
        while not assigned.done.is_set():
            await consumer.getmany(timeout_ms=50)
        await consumer.seek_to_end()

        async def reader() -> None:
            while len(received) < count:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        received[int(record.value)] = now

        reading = asyncio.create_task(reader())

        async def send(i: int) -> None:
            sent[i] = time.time()
            await producer.send(BASELINE_TOPIC, str(i).encode())

        await offered(rate, count, send)
        async with asyncio.timeout(60):
            await reading
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "scenario": "baseline_kafka_latency",
        "offered_per_s": rate,
        "n": count,
        "fetch_max_wait_ms": fetch_wait_ms,
        **percentiles([received[i] - sent[i] for i in range(count)]),
    }


async def timings(pool: asyncpg.Pool[Any], run: str) -> dict[int, tuple[float, float, float]]:
    """Per record number of `run`: instance created, node started, instance finished (epoch s)."""
    rows = await pool.fetch(
        "SELECT (i.trigger_message->>'value')::jsonb->>'n' AS n, "
        "extract(epoch FROM i.created_at) AS created, "
        "extract(epoch FROM min(a.started_at)) AS started, "
        "extract(epoch FROM i.finished_at) AS finished "
        "FROM instances i JOIN node_instances nd ON nd.instance_id = i.id "
        "JOIN attempts a ON a.node_instance_id = nd.id "
        "WHERE i.state = 'succeeded' AND (i.trigger_message->>'value')::jsonb->>'run' = $1 "
        "GROUP BY 1, 2, 4",
        run,
    )
    return {
        int(r["n"]): (float(r["created"]), float(r["started"]), float(r["finished"])) for r in rows
    }


async def produce_at(
    bootstrap: str, pool: asyncpg.Pool[Any], run: str, rate: float, count: int
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1)
    await producer.start()
    sent: dict[int, float] = {}
    try:

        async def send(i: int) -> None:
            sent[i] = time.time()
            await producer.send(TOPIC, json.dumps({"run": run, "n": i}).encode())

        await offered(rate, count, send)
        await producer.flush()
    finally:
        await producer.stop()

    async def finished() -> bool:
        return len(await timings(pool, run)) >= count

    await poll(finished, 0.1)
    done = await timings(pool, run)
    return {
        "event_to_admitted": percentiles([done[i][0] - sent[i] for i in range(count)]),
        "event_to_node_start": percentiles([done[i][1] - sent[i] for i in range(count)]),
        "event_to_succeeded": percentiles([done[i][2] - sent[i] for i in range(count)]),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    logs = Path(tempfile.mkdtemp(prefix="sluice-bench-logs-"))
    note(f"service logs: {logs}")
    async with (
        database("sluice_bench_kafka_latency") as dsn,
        EmbeddedKafka(backend="tansu", log_path=logs / "broker.log") as broker,
    ):
        await create_topics(broker.bootstrap, [TOPIC])
        pool = await create_pool(dsn, max_size=4)
        await bind_workflow(pool, TOPIC, trigger="bench_latency")
        emit(await baseline(broker.bootstrap, args.rate, args.messages, args.fetch_max_wait_ms))

        env = listener_env(
            dsn,
            broker.bootstrap,
            f"bench-latency-{uuid.uuid4().hex[:8]}",
            SLUICE_LOG_LEVEL="warning",
            SLUICE_KAFKA_FETCH_MAX_WAIT_MS=str(args.fetch_max_wait_ms),
        )
        with (logs / "listener.log").open("ab") as listener_log:
            listener = await asyncio.create_subprocess_exec(
                SLUICE,
                "run",
                "kafka-listener",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=listener_log,
            )
        with (logs / "executor.log").open("ab") as executor_log:
            executor = await asyncio.create_subprocess_exec(
                SLUICE,
                "run",
                "executor",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=executor_log,
            )
        try:
            # Warm-up (not measured): both processes connected, the group joined.
            await produce_at(broker.bootstrap, pool, "warmup", 20, WARMUP)
            idle_s = 5.0
            before = cpu_seconds(listener.pid)
            await asyncio.sleep(idle_s)
            idle = (cpu_seconds(listener.pid) - before) / idle_s
            emit(
                {
                    "scenario": "kafka_listener_idle_cpu",
                    "fetch_max_wait_ms": args.fetch_max_wait_ms,
                    "cpu_percent_of_one_core": round(idle * 100, 2),
                }
            )
            result = await produce_at(broker.bootstrap, pool, "measured", args.rate, args.messages)
            emit(
                {
                    "scenario": "kafka_latency",
                    "offered_per_s": args.rate,
                    "n": args.messages,
                    "fetch_max_wait_ms": args.fetch_max_wait_ms,
                    **result,
                }
            )
        finally:
            for proc in (listener, executor):
                if proc.returncode is None:
                    proc.terminate()
            for proc in (listener, executor):
                async with asyncio.timeout(30):
                    await proc.wait()
        await pool.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="offered records/s")
    parser.add_argument("--messages", type=int, default=1000, help="measured records")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=10)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
