"""Kafka intake benchmark.

Against an embedded PostgreSQL (or `SLUICE_BENCH_DATABASE_URL`, a server this may create a
database on) and an embedded Tansu broker, prints one JSON line per scenario:

- `baseline_kafka_consume`: a bare aiokafka consumer reads the N records with `getmany()`
  (manual commits, no processing) → records/s: the broker and client floor.
- `baseline_kafka_consume_convert`: the same, turning each record into the listener's event
  (`records.to_event`: trigger message, UTF-8/base64) → records/s.
- `baseline_pg_insert`: `INSERT ... SELECT unnest(...) ON CONFLICT DO NOTHING` of N unique keys
  in transactions of the listener's batch size → rows/s: the database floor.
- `baseline_admit_batch`: the listener's events for N records (built in memory, no Kafka)
  admitted with `shared.intake.admit_batch` in batches of the same size → events/s: the floor
  of the shared intake transaction (dedup, audit, instance and node rows) on this machine.
- `kafka_intake`: `sluice run kafka-listener` (a real process) admits the N records already on
  the topic: dedup on (offset), audit records, one instance with its node per record → events/s,
  with the ratios to the baselines.
- `kafka_intake_redelivery`: the group rewound to the start, the N records again → all
  `duplicate`, events/s.

    python -m bench.intake [--messages 20000] [--partitions 2] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bench.common import ROOT, emit, fresh_database, postgres_server, sluice_env
from services.dev.servers.kafka import EmbeddedKafka, create_topics
from services.kafka_listener.records import to_event
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.pool import create_pool
from shared.intake import admit_batch
from shared.logging import configure as configure_logging
from shared.models.events import MAX_PAYLOAD_BYTES
from shared.models.triggers import KafkaTriggerSpec
from shared.models.workflows import WorkflowSpec

SLUICE = str(Path(sys.executable).with_name("sluice"))
DATABASE = "sluice_bench_kafka"
TOPIC = "bench-intake"
TRIGGER = "bench_kafka"


def note(text: str) -> None:
    sys.stderr.write(text + "\n")


@asynccontextmanager
async def database(name: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the bench server (embedded unless configured)."""
    with postgres_server() as server:
        async with fresh_database(server, name) as dsn:
            yield dsn


async def bind_workflow(pool: asyncpg.Pool[Any], topic: str, trigger: str = TRIGGER) -> None:
    """A Kafka trigger (dedup by offset) and a published one-node workflow bound to it."""
    spec = KafkaTriggerSpec(name=trigger, type="kafka", topic=topic)
    flow = WorkflowSpec.model_validate(
        {
            "name": f"{trigger}_wf",
            "type": "triggered",
            "trigger": trigger,
            "policy": {"max_parallel_instances": None},
            "nodes": [{"name": "noop", "type": "shell", "code": "true", "upstream": []}],
        }
    )
    async with pool.acquire() as conn:
        await trigger_repo.upsert(conn, "default", 1, spec)
        await workflow_repo.save(conn, 1, flow, publish=True)


async def produce(
    bootstrap: str, topic: str, count: int, partitions: int, *, first: int = 0
) -> float:
    """Records `first`..`first + count - 1` (small JSON) in full 1 MiB batches, the batches
    round-robin over the partitions; returns records/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks=1,
        linger_ms=50,
        max_batch_size=1 << 20,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        n, end, partition = first, first + count, 0
        while n < end:
            batch = producer.create_batch()
            while n < end:
                value = json.dumps({"user_id": f"u{n % 1000}", "action_type": "login", "n": n})
                if batch.append(key=None, value=value.encode(), timestamp=None) is None:
                    break
                n += 1
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            partition = (partition + 1) % partitions
            if len(pending) >= 8:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count / max(time.perf_counter() - started, 1e-9)


# aiokafka ships no type information, so its base class is Any to mypy (subclassing Any).
class Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.at = 0.0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.at = time.perf_counter()
            self.done.set()


async def baseline_consume(
    bootstrap: str, topic: str, count: int, batch: int, convert: bool
) -> dict[str, Any]:
    """Read every record of the topic with a bare consumer, timed from the assignment (when
    fetching starts) to the last record."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_poll_records=batch,
        max_partition_fetch_bytes=MAX_PAYLOAD_BYTES + (64 << 10),
        session_timeout_ms=2000,
        heartbeat_interval_ms=100,
    )
    await consumer.start()
    assigned = Assigned()
    consumer.subscribe([topic], listener=assigned)
    seen = 0
    now = datetime.now(UTC)
    try:
        while seen < count:
            records = await consumer.getmany(timeout_ms=200, max_records=batch)
            for partition_records in records.values():
                seen += len(partition_records)
                if convert:
                    for record in partition_records:
                        to_event(record, now, MAX_PAYLOAD_BYTES)
        elapsed = time.perf_counter() - assigned.at
    finally:
        await consumer.stop()
    return {
        "scenario": "baseline_kafka_consume_convert" if convert else "baseline_kafka_consume",
        "records": seen,
        "seconds": round(elapsed, 3),
        "records_per_s": round(seen / elapsed, 1),
    }


async def baseline_insert(dsn: str, count: int, batch: int) -> dict[str, Any]:
    """Unique-key batch inserts with ON CONFLICT DO NOTHING, one transaction per batch."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, "
            "trigger_id bigint NOT NULL, dedup_key text NOT NULL, payload jsonb, "
            "UNIQUE (trigger_id, dedup_key))"
        )
        await conn.execute("TRUNCATE bench_floor")
        payload = json.dumps({"user_id": "u1", "action_type": "login"})
        started = time.perf_counter()
        for first in range(0, count, batch):
            keys = [f"{TOPIC}/0/{n}" for n in range(first, min(count, first + batch))]
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO bench_floor (trigger_id, dedup_key, payload) "
                    "SELECT 1, k, $2::jsonb FROM unnest($1::text[]) AS k "
                    "ON CONFLICT DO NOTHING",
                    keys,
                    payload,
                )
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_floor")
    finally:
        await conn.close()
    return {
        "scenario": "baseline_pg_insert",
        "rows": count,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(count / elapsed, 1),
    }


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


async def baseline_admit_batch(pool: asyncpg.Pool[Any], count: int, batch: int) -> dict[str, Any]:
    """`admit_batch` alone, on a topic of its own (same trigger and workflow shape)."""
    topic = "bench-admit-floor"
    await bind_workflow(pool, topic, trigger="bench_floor")
    now = datetime.now(UTC)
    stamp = int(now.timestamp() * 1000)
    events = [
        to_event(
            _Record(topic, 0, n, stamp, None, json.dumps({"n": n}).encode()),
            now,
            MAX_PAYLOAD_BYTES,
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    for first in range(0, count, batch):
        await admit_batch(pool, events[first : first + batch])
    elapsed = time.perf_counter() - started
    return {
        "scenario": "baseline_admit_batch",
        "events": count,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "events_per_s": round(count / elapsed, 1),
    }


def listener_env(dsn: str, bootstrap: str, group: str, **extra: str) -> dict[str, str]:
    """Environment of a `sluice run kafka-listener` process (short group timings)."""
    return sluice_env(
        dsn,
        SLUICE_KAFKA_BOOTSTRAP=bootstrap,
        SLUICE_KAFKA_GROUP_ID=group,
        SLUICE_KAFKA_SESSION_TIMEOUT_MS="2000",
        SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS="100",
        SLUICE_DB_POOL_MAX="8",
        **extra,
    )


@asynccontextmanager
async def process(args: list[str], env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """A `sluice` process for the duration of the block (SIGTERM, then SIGKILL after 30 s)."""
    with log.open("ab") as sink:
        # Blocking spawn in async code: it takes a moment, and waiting on it happens in threads.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [SLUICE, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink
        )
        try:
            yield
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


async def poll(check: Callable[[], Awaitable[bool]], every_s: float = 0.02) -> float:
    """Wait until `check()`; returns the perf_counter time it first held."""
    async with asyncio.timeout(600):
        # A poll loop: the condition is in the database, there is no event to wait for.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(every_s)
    return time.perf_counter()


async def timed_intake(pool: asyncpg.Pool[Any], total_events: int, before: int) -> float:
    """Seconds from the first new event recorded to the `total_events`-th (20 ms resolution)."""

    async def count() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM events WHERE subject = $1", TOPIC))

    async def started() -> bool:
        return await count() > before

    async def finished() -> bool:
        return await count() >= total_events

    first = await poll(started)
    last = await poll(finished)
    return last - first


async def rewind(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 on every partition as a member of `group`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=100,
    )
    await consumer.start()
    assigned = Assigned()
    consumer.subscribe([topic], listener=assigned)
    try:
        async with asyncio.timeout(60):
            while not assigned.done.is_set():
                await consumer.getmany(timeout_ms=100)
        await consumer.commit({TopicPartition(topic, p): 0 for p in range(partitions)})
    finally:
        await consumer.stop()


async def outcome_counts(pool: asyncpg.Pool[Any]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT o.outcome, count(*) AS n FROM event_outcomes o JOIN events e ON e.id = o.event_id "
        "WHERE e.subject = $1 GROUP BY 1",
        TOPIC,
    )
    return {r["outcome"]: int(r["n"]) for r in rows}


async def main(args: argparse.Namespace) -> None:
    # `admit_batch` runs in this process: log as the listener does, not to an unconfigured
    # console renderer (which made a line per event cost more than admitting it).
    configure_logging("json", args.log_level)
    logs = Path(tempfile.mkdtemp(prefix="sluice-bench-logs-"))
    note(f"service logs: {logs}")
    async with (
        database(DATABASE) as dsn,
        EmbeddedKafka(backend="tansu", log_path=logs / "broker.log") as broker,
    ):
        n, batch = args.messages, args.batch
        await create_topics(broker.bootstrap, [TOPIC], args.partitions)
        pool = await create_pool(dsn, max_size=4)
        await bind_workflow(pool, TOPIC)
        rate = await produce(broker.bootstrap, TOPIC, n, args.partitions)
        note(f"produced {n} records at {rate:.0f}/s")

        raw = await baseline_consume(broker.bootstrap, TOPIC, n, batch, convert=False)
        emit(raw)
        converted = await baseline_consume(broker.bootstrap, TOPIC, n, batch, convert=True)
        emit(converted)
        floor = await baseline_insert(dsn, n, batch)
        emit(floor)
        shared_floor = await baseline_admit_batch(pool, n, batch)
        emit(shared_floor)

        group = f"bench-listener-{uuid.uuid4().hex[:8]}"
        env = listener_env(
            dsn,
            broker.bootstrap,
            group,
            SLUICE_KAFKA_MAX_BATCH=str(batch),
            SLUICE_LOG_LEVEL=args.log_level,
        )
        for label, expected in (("kafka_intake", n), ("kafka_intake_redelivery", 2 * n)):
            if label == "kafka_intake_redelivery":
                await rewind(broker.bootstrap, group, TOPIC, args.partitions)
            before = int(
                await pool.fetchval("SELECT count(*) FROM events WHERE subject = $1", TOPIC)
            )
            async with process(["run", "kafka-listener"], env, logs / "listener.log"):
                seconds = await timed_intake(pool, expected, before)
            events = expected - before
            per_s = events / seconds
            emit(
                {
                    "scenario": label,
                    "events": events,
                    "batch": batch,
                    "partitions": args.partitions,
                    "log_level": args.log_level,
                    "seconds": round(seconds, 3),
                    "events_per_s": round(per_s, 1),
                    "ratio_to_raw_consume": round(per_s / raw["records_per_s"], 3),
                    "ratio_to_consume_convert": round(per_s / converted["records_per_s"], 3),
                    "ratio_to_pg_insert": round(per_s / floor["rows_per_s"], 3),
                    "ratio_to_admit_batch": round(per_s / shared_floor["events_per_s"], 3),
                    "instances": int(
                        await pool.fetchval(
                            "SELECT count(*) FROM instances WHERE trigger_message->>'topic' = $1",
                            TOPIC,
                        )
                    ),
                    "outcomes": await outcome_counts(pool),
                }
            )
        await pool.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="records to admit")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500, help="SLUICE_KAFKA_MAX_BATCH")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
