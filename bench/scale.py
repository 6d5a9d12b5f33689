"""Matching cost per event as the number of triggers grows (DESIGN.md 13.4).

For each trigger count (10 / 1,000 / 10,000; `--quick`: 10 / 100 / 1,000), half Kafka triggers
(one topic each, every fourth one with a key) and half S3 triggers spread over 4 buckets (glob
key patterns `p<i>/**/*.csv`) are created in a fresh database; 8 Kafka and 8 S3 triggers have a
published one-node workflow. Events are then admitted with `shared.intake.admit_batch`, each
matching exactly one of those 16 triggers, in three mixes: `kafka`, `s3` and `mixed` (half each).
One JSON line per (mix, trigger count):

- `us_per_event`: wall time of `admit_batch` per event (dedup, audit, instance and node rows);
- `index_us_per_event`: finding the candidates with `shared.matching.TriggerIndex` alone;
- `outcomes_per_event`: audit outcome rows stored per event;
- `instances_per_event`: must be 1 (every event matched exactly one bound trigger);
- `trigger_set_load_ms`: loading and indexing every trigger once after they were created
  (intake does it once per trigger change, not per event, so it is timed apart).

A `scale_summary` line per mix gives the ratio of the largest to the smallest trigger count
(target: flat within 2x).

    python -m bench.scale [--events 500] [--batch 250] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.common import emit, fresh_database, postgres_server
from services.kafka_listener.records import to_event
from shared import trigger_set
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.pool import create_pool
from shared.intake import admit_batch
from shared.logging import configure as configure_logging
from shared.matching import TriggerIndex
from shared.models.events import MAX_PAYLOAD_BYTES, IncomingEvent
from shared.models.triggers import KafkaTriggerSpec, S3TriggerSpec
from shared.models.workflows import WorkflowSpec

BUCKETS = 4
BOUND = 8  # bound triggers of each kind; events match only these
MIXES = ("kafka", "s3", "mixed")


@dataclass(frozen=True)
class _KafkaRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def trigger_specs(count: int) -> list[KafkaTriggerSpec | S3TriggerSpec]:
    specs: list[KafkaTriggerSpec | S3TriggerSpec] = []
    for i in range(count // 2):
        specs.append(
            KafkaTriggerSpec(
                name=f"k{i}", type="kafka", topic=f"topic-{i}", key="k" if i % 4 == 3 else None
            )
        )
        specs.append(
            S3TriggerSpec(
                name=f"s{i}",
                type="s3",
                bucket=f"bucket-{i % BUCKETS}",
                key_pattern=f"p{i}/**/*.csv",
            )
        )
    return specs


async def create_triggers(pool: asyncpg.Pool[Any], count: int) -> list[Any]:
    specs = trigger_specs(count)
    async with pool.acquire() as conn, conn.transaction():
        for spec in specs:
            await trigger_repo.upsert(conn, "default", 1, spec)
        for spec in specs:
            if int(spec.name[1:]) < BOUND:
                flow = WorkflowSpec.model_validate(
                    {
                        "name": f"wf_{spec.name}",
                        "type": "triggered",
                        "trigger": spec.name,
                        "policy": {"max_parallel_instances": None},
                        "nodes": [{"name": "noop", "type": "shell", "code": "true"}],
                    }
                )
                await workflow_repo.save(conn, 1, flow, publish=True)
    return specs


def kafka_event(n: int, now: datetime, bound: int) -> IncomingEvent:
    i = n % bound
    record = _KafkaRecord(
        topic=f"topic-{i}",
        partition=0,
        offset=n,
        timestamp=int(now.timestamp() * 1000),
        key=b"k" if i % 4 == 3 else None,
        value=b'{"n": %d}' % n,
    )
    return to_event(record, now, MAX_PAYLOAD_BYTES)


def s3_event(n: int, now: datetime, bound: int) -> IncomingEvent:
    i = n % bound
    bucket, key, etag = f"bucket-{i % BUCKETS}", f"p{i}/day/{n}.csv", f"{n:032x}"
    message = {
        "specversion": "1.0",
        "id": f"{bucket}/{key}@{etag}",
        "source": f"s3://{bucket}",
        "type": "s3:ObjectCreated:Put",
        "subject": f"{bucket}/{key}",
        "time": now.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "eventName": "s3:ObjectCreated:Put",
            "eventTime": now.isoformat(),
            "eventSource": "aws:s3",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 1}},
        },
    }
    return IncomingEvent(
        source="s3", subject=bucket, ref=f"{bucket}/{key}@{etag}", message=message, received_at=now
    )


def events_for(mix: str, count: int, first: int, bound: int) -> list[IncomingEvent]:
    now = datetime.now(UTC)
    out = []
    for n in range(first, first + count):
        kind = mix if mix != "mixed" else ("kafka" if n % 2 else "s3")
        out.append(kafka_event(n, now, bound) if kind == "kafka" else s3_event(n, now, bound))
    return out


async def measure(
    pool: asyncpg.Pool[Any],
    specs: list[Any],
    mix: str,
    triggers: int,
    events: int,
    batch: int,
    first: int,
) -> dict[str, Any]:
    # Events match only bound triggers: at most BOUND of each kind, fewer when there are fewer.
    batch_events = events_for(mix, events, first, min(BOUND, triggers // 2))
    index = TriggerIndex([(s, s.name) for s in specs])
    started = time.perf_counter()
    found = 0
    for e in batch_events:
        assert e.message is not None
        found += len(index.candidates(e.source, e.message))
    index_s = time.perf_counter() - started
    outcomes_before = await pool.fetchval("SELECT count(*) FROM event_outcomes")
    instances_before = await pool.fetchval("SELECT count(*) FROM instances")
    started = time.perf_counter()
    for at in range(0, events, batch):
        await admit_batch(pool, batch_events[at : at + batch])
    elapsed = time.perf_counter() - started
    outcomes = await pool.fetchval("SELECT count(*) FROM event_outcomes") - outcomes_before
    instances = await pool.fetchval("SELECT count(*) FROM instances") - instances_before
    return {
        "scenario": "scale",
        "mix": mix,
        "triggers": triggers,
        "events": events,
        "us_per_event": round(elapsed / events * 1e6, 1),
        "index_us_per_event": round(index_s / events * 1e6, 2),
        "index_candidates_per_event": round(found / events, 2),
        "outcomes_per_event": round(outcomes / events, 1),
        "instances_per_event": round(instances / events, 3),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    configure_logging("json", "warning")
    counts = (10, 100, 1000) if args.quick else (10, 1000, 10000)
    events = args.events or (100 if args.quick else 500)
    results: list[dict[str, Any]] = []
    with postgres_server() as server:
        for count in counts:
            async with fresh_database(server, f"sluice_bench_scale_{count}") as dsn:
                pool = await create_pool(dsn, max_size=2)
                try:
                    specs = await create_triggers(pool, count)
                    started = time.perf_counter()
                    async with pool.acquire() as conn:
                        await trigger_set.current(conn)
                    load_ms = round((time.perf_counter() - started) * 1000, 1)
                    for m, mix in enumerate(MIXES):
                        result = await measure(
                            pool, specs, mix, count, events, args.batch, m * 10**6
                        )
                        result["trigger_set_load_ms"] = load_ms
                        emit(result)
                        results.append(result)
                finally:
                    await pool.close()
    for mix in MIXES:
        rows = [r for r in results if r["mix"] == mix]
        ratio = rows[-1]["us_per_event"] / rows[0]["us_per_event"]
        summary = {
            "scenario": "scale_summary",
            "mix": mix,
            "triggers": [r["triggers"] for r in rows],
            "us_per_event": [r["us_per_event"] for r in rows],
            "ratio_largest_to_smallest": round(ratio, 2),
            "met": ratio <= 2.0,
        }
        emit(summary)
        results.append(summary)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=0, help="events per mix (0: 500, quick 100)")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--quick", action="store_true", help="10 / 100 / 1,000 triggers")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
