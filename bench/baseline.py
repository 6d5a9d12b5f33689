"""`baseline`: this machine's raw floor, measured in the same run as the scenarios.

- `skip_locked_claim`: rows/s claimed from a 10,000-row queue table with
  `UPDATE ... WHERE id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP LOCKED))`, one row per
  statement and n per statement, by 1 and 4 concurrent connections;
- `insert_on_conflict`: rows/s of batched `INSERT ... SELECT unnest(...) ON CONFLICT DO NOTHING`;
- `subprocess_spawn`: bash processes/s (`bash -c 'exit 0'`, output piped) started by asyncio with
  the executor's child watcher, 1, 8 and 16 at a time;
- `kafka_consume`: messages/s of aiokafka `getmany` over pre-produced messages on the embedded
  broker (skipped with a reason when no broker can start).

    python -m bench.baseline [--rows 10000] [--spawns 1000] [--kafka-messages 50000] [--no-kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg

from bench.common import emit, fresh_database, postgres_server
from services.executor.service import use_pidfd_child_watcher

QUEUE_DDL = """
CREATE TABLE bench_queue (id bigserial PRIMARY KEY, state text NOT NULL, priority int NOT NULL,
                          claimed_by text);
CREATE INDEX bench_queue_ready ON bench_queue (priority DESC, id) WHERE state = 'ready';
"""
CLAIM = """
UPDATE bench_queue SET state = 'running', claimed_by = $1
WHERE id = ANY(ARRAY(SELECT id FROM bench_queue WHERE state = 'ready'
                     ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING id
"""


async def skip_locked_claim_rate(dsn: str, rows: int, batch: int, workers: int) -> float:
    """Rows claimed per second until the queue is empty."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_queue")
        await conn.execute(QUEUE_DDL)
        await conn.execute(
            "INSERT INTO bench_queue (state, priority) "
            "SELECT 'ready', (ARRAY[1,3,5,7,8])[1 + g % 5] FROM generate_series(1, $1) g",
            rows,
        )
        await conn.execute("VACUUM ANALYZE bench_queue")
    finally:
        await conn.close()
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]

    async def work(c: asyncpg.Connection[Any], name: str) -> int:
        claimed = 0
        while got := await c.fetch(CLAIM, name, batch):
            claimed += len(got)
        return claimed

    try:
        started = time.perf_counter()
        counts = await asyncio.gather(*(work(c, f"w{i}") for i, c in enumerate(conns)))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            await c.close()
    assert sum(counts) == rows
    return rows / elapsed


async def insert_on_conflict_rate(dsn: str, rows: int, batch: int) -> float:
    """Rows/s of batched idempotent inserts (half of them conflicting)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_dedup")
        await conn.execute("CREATE TABLE bench_dedup (key text PRIMARY KEY, payload jsonb)")
        keys = [f"topic/0/{i // 2}" for i in range(rows)]
        started = time.perf_counter()
        for start in range(0, rows, batch):
            chunk = keys[start : start + batch]
            await conn.execute(
                "INSERT INTO bench_dedup (key, payload) "
                "SELECT k, jsonb_build_object('k', k) FROM unnest($1::text[]) k "
                "ON CONFLICT DO NOTHING",
                chunk,
            )
        return rows / (time.perf_counter() - started)
    finally:
        await conn.close()


async def spawn_rate(count: int, parallel: int) -> float:
    """bash processes started (and reaped) per second, `parallel` at a time."""
    use_pidfd_child_watcher()
    gate = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "--noprofile",
                "--norc",
                "-c",
                "exit 0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            assert proc.stdout is not None
            await proc.stdout.read()
            await proc.wait()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


async def kafka_consume_rate(messages: int) -> dict[str, Any]:
    """aiokafka getmany over pre-produced messages: raw and with json.loads."""
    import json

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from services.dev.servers.kafka import EmbeddedKafka, create_topics

    async with EmbeddedKafka() as broker:
        await create_topics(broker.bootstrap, ["bench"], 1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            value = json.dumps({"action_type": "login", "user_id": 42}).encode()
            produced = 0
            while produced < messages:
                batch = producer.create_batch()
                while produced < messages and batch.append(key=None, value=value, timestamp=None):
                    produced += 1
                await (await producer.send_batch(batch, "bench", partition=0))
        finally:
            await producer.stop()
        rates: dict[str, Any] = {"backend": broker.backend}
        for label, decode in (("raw_msgs_per_s", False), ("json_msgs_per_s", True)):
            consumer = AIOKafkaConsumer(
                "bench",
                bootstrap_servers=broker.bootstrap,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=None,
            )
            await consumer.start()
            try:
                seen = 0
                started = time.perf_counter()
                while seen < messages:
                    got = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                    for records in got.values():
                        if decode:
                            for r in records:
                                json.loads(r.value)
                        seen += len(records)
                rates[label] = round(messages / (time.perf_counter() - started))
            finally:
                await consumer.stop()
        return rates


async def claim_baseline(dsn: str, rows: int) -> dict[str, int]:
    """SKIP LOCKED claim rates the dispatch figures are compared with."""
    out = {}
    for batch, workers in ((1, 1), (100, 1), (100, 4)):
        rate = await skip_locked_claim_rate(dsn, rows, batch, workers)
        out[f"batch{batch}_workers{workers}_rows_per_s"] = round(rate)
    return out


async def spawn_baseline(count: int) -> dict[str, int]:
    return {f"parallel{p}_per_s": round(await spawn_rate(count, p)) for p in (1, 8, 16)}


async def main(args: argparse.Namespace) -> None:
    with postgres_server() as server:
        async with fresh_database(server, "sluice_bench_baseline") as dsn:
            record: dict[str, Any] = {"scenario": "baseline"}
            record["skip_locked_claim"] = await claim_baseline(dsn, args.rows)
            record["insert_on_conflict_rows_per_s"] = round(
                await insert_on_conflict_rate(dsn, args.rows * 2, 500)
            )
            record["subprocess_spawn"] = await spawn_baseline(args.spawns)
            if args.no_kafka:
                record["kafka_consume"] = {"skipped": "--no-kafka"}
            else:
                try:
                    record["kafka_consume"] = await kafka_consume_rate(args.kafka_messages)
                except Exception as exc:  # a missing broker must not hide the other figures
                    record["kafka_consume"] = {"skipped": f"{type(exc).__name__}: {exc}"}
            emit(record)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--spawns", type=int, default=1000)
    parser.add_argument("--kafka-messages", type=int, default=50_000)
    parser.add_argument("--no-kafka", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
