"""Memory benchmark: resident memory of every service idle, under intake and under a backlog.

`sluice run api`, `executor`, `scheduler`, `kafka-listener`, `storage-listener` and `notifier`
run as six real processes against an embedded PostgreSQL (or `SLUICE_BENCH_DATABASE_URL`) and an
embedded Tansu broker. A Kafka trigger starts a one-node workflow whose node is `true` (completed
in-process by the executor), so instances drain. RSS is `VmRSS` of `/proc/PID/status`, sampled
every 200 ms; `hwm_mib` is `VmHWM` (peak since the process started). Prints one JSON line
(`"scenario": "memory"`) per phase:

- `idle`: after start-up and a 20-record warm-up, `--settle-s` of quiet, then the largest RSS of
  each service over `--idle-s`.
- `intake`: `--messages` records produced while everything runs; the largest RSS of each
  service from the first produce until every instance has finished, and its ratio to idle.
- `backlog` (twice): the kafka-listener is stopped, the topic is filled until `--backlog`
  records wait for it, and it is started again and sampled for `--backlog-seconds` from its
  first admission (less if it reads them all): RSS at the start, largest and at the end, the
  largest of each tenth of the window, the largest of its first and of its second half and
  their ratio (`second_to_first_half`; `bounded` when at most 1.10: memory does not grow with
  the records read), records admitted in the window and waiting instances. The workflow runs
  at most `--max-parallel` instances at once, slower than intake: first with
  `policy.max_waiting` = `--max-waiting` (the listener pauses the topic while that many
  instances wait, so it reads as fast as the executor drains), then without it (the listener
  reads as fast as it admits; waiting instances pile up in PostgreSQL).

`--quick`: 5,000 intake records and a backlog of 100,000 (about 3 minutes). The listener at
`max_waiting` climbs for about a minute before it levels off: a window much shorter than the
default counts that climb as growth.

    python -m bench.memory [--messages 20000] [--backlog 1000000] [--backlog-seconds 120]
                           [--max-parallel 4] [--max-waiting 1000] [--partitions 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import ROOT, emit
from bench.intake import SLUICE, database, listener_env, note, poll, produce
from bench.table import BOUNDED_RATIO, MEMORY_SERVICES
from services.dev.servers.kafka import EmbeddedKafka, create_topics
from services.dev.servers.process import free_port
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.pool import create_pool
from shared.models.triggers import KafkaTriggerSpec
from shared.models.workflows import WorkflowSpec

LISTENER = "kafka-listener"
DATABASE = "sluice_bench_memory"
TOPIC = "bench-memory"
TRIGGER = "bench_memory"
WARMUP = 20
SAMPLE_S = 0.2


_STARTED = time.monotonic()


def step(text: str) -> None:
    """Progress on stderr, with the seconds since the start."""
    note(f"memory: {time.monotonic() - _STARTED:6.1f} s {text}")


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    if len(fields) < 2:
        return None
    return fields["VmRSS"], fields["VmHWM"]


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    probe_port: int


@dataclass
class Samples:
    """RSS samples (monotonic time, KiB) per service name, taken until `stop` is set."""

    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    hwm: dict[str, int] = field(default_factory=dict)

    def take(self, services: dict[str, Service]) -> None:
        now = time.monotonic()
        for name, service in services.items():
            found = memory_kib(service.proc.pid)
            if found is not None:
                self.rss.setdefault(name, []).append((now, found[0]))
                self.hwm[name] = found[1]

    async def run(self, services: dict[str, Service], stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.take(services)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)

    def largest(self, name: str, since: float = 0.0, until: float = float("inf")) -> int | None:
        values = [kib for at, kib in self.rss.get(name, []) if since <= at <= until]
        return max(values) if values else None


@contextlib.asynccontextmanager
async def sampling(services: dict[str, Service]) -> AsyncIterator[Samples]:
    """Samples of `services` (the dict may change meanwhile) while the block runs."""
    samples = Samples()
    stop = asyncio.Event()
    task = asyncio.create_task(samples.run(services, stop))
    try:
        yield samples
    finally:
        stop.set()
        await task
        samples.take(services)


def start_service(name: str, env: dict[str, str], logs: Path) -> Service:
    """`sluice run NAME` with probes on a port of its own (as in production)."""
    port = free_port()
    with (logs / f"{name}.log").open("ab") as sink:
        proc = subprocess.Popen(
            [SLUICE, "run", name],
            env={**env, "SLUICE_METRICS_PORT": str(port)},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    return Service(name, proc, port)


async def stop_service(service: Service) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if service.proc.poll() is None:
        service.proc.terminate()
    try:
        await asyncio.to_thread(service.proc.wait, 30)
    except subprocess.TimeoutExpired:
        service.proc.kill()
        await asyncio.to_thread(service.proc.wait)


async def wait_ready(services: list[Service]) -> None:
    """Until every service's `/readyz` answers 200."""
    async with httpx.AsyncClient(timeout=2) as client:
        for service in services:

            async def ready(service: Service = service) -> bool:
                if service.proc.poll() is not None:
                    raise RuntimeError(f"{service.name} exited with {service.proc.returncode}")
                try:
                    url = f"http://127.0.0.1:{service.probe_port}/readyz"
                    return (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    return False

            await poll(ready, 0.1)


async def publish(
    pool: asyncpg.Pool[Any], max_parallel: int | None = None, max_waiting: int | None = None
) -> None:
    """The Kafka trigger and its published one-node workflow (`true`), optionally limited."""
    policy: dict[str, Any] = {"max_parallel_instances": max_parallel}
    if max_waiting is not None:
        policy["max_waiting"] = max_waiting
    flow = WorkflowSpec.model_validate(
        {
            "name": f"{TRIGGER}_wf",
            "type": "triggered",
            "trigger": TRIGGER,
            "policy": policy,
            "nodes": [{"name": "noop", "type": "shell", "code": "true", "upstream": []}],
        }
    )
    async with pool.acquire() as conn:
        await trigger_repo.upsert(
            conn, "default", 1, KafkaTriggerSpec(name=TRIGGER, type="kafka", topic=TOPIC)
        )
        await workflow_repo.save(conn, 1, flow, publish=True)


async def admitted(pool: asyncpg.Pool[Any]) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events WHERE subject = $1", TOPIC))


async def drained(pool: asyncpg.Pool[Any], instances: int) -> None:
    """Until `instances` instances have finished."""

    async def done() -> bool:
        finished = await pool.fetchval(
            "SELECT count(*) FROM instances WHERE finished_at IS NOT NULL"
        )
        return int(finished) >= instances

    await poll(done, 0.1)


def ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None


def per_service(values: dict[str, int | None]) -> dict[str, float | None]:
    return {name: None if kib is None else mib(kib) for name, kib in values.items()}


async def idle_phase(services: dict[str, Service], args: argparse.Namespace) -> dict[str, Any]:
    await asyncio.sleep(args.settle_s)
    async with sampling(services) as samples:
        await asyncio.sleep(args.idle_s)
    rss = {name: samples.largest(name) for name in services}
    return {
        "scenario": "memory",
        "phase": "idle",
        "settle_s": args.settle_s,
        "window_s": args.idle_s,
        "samples": len(samples.rss.get(LISTENER, [])),
        "rss_mib": per_service(rss),
        "hwm_mib": per_service(dict(samples.hwm)),
        "total_rss_mib": mib(sum(v for v in rss.values() if v)),
    }


async def intake_phase(
    services: dict[str, Service],
    pool: asyncpg.Pool[Any],
    bootstrap: str,
    args: argparse.Namespace,
    idle: dict[str, Any],
    produced: int,
) -> dict[str, Any]:
    n = args.messages
    started = time.perf_counter()
    async with sampling(services) as samples:
        rate = await produce(bootstrap, TOPIC, n, args.partitions, first=produced)
        await drained(pool, produced + n)
    seconds = time.perf_counter() - started
    rss = per_service({name: samples.largest(name) for name in services})
    return {
        "scenario": "memory",
        "phase": "intake",
        "messages": n,
        "produced_per_s": round(rate),
        "seconds_to_all_finished": round(seconds, 2),
        "samples": len(samples.rss.get(LISTENER, [])),
        "rss_mib": rss,
        "hwm_mib": per_service(dict(samples.hwm)),
        "ratio_to_idle": {name: ratio(value, idle["rss_mib"][name]) for name, value in rss.items()},
        "total_rss_mib": round(sum(v for v in rss.values() if v), 1),
    }


async def backlog_phase(
    services: dict[str, Service],
    pool: asyncpg.Pool[Any],
    bootstrap: str,
    env: dict[str, str],
    logs: Path,
    args: argparse.Namespace,
    max_waiting: int | None,
    produced: int,
    broker_pid: int | None,
) -> tuple[dict[str, Any], int]:
    """Stop the listener, top the topic up to `--backlog` unread records, restart it and sample.
    Returns the result and the records produced so far."""
    await stop_service(services.pop(LISTENER))
    await publish(pool, args.max_parallel, max_waiting)
    done = await admitted(pool)
    await drained(pool, done)
    top_up = args.backlog - (produced - done)
    rate = await produce(bootstrap, TOPIC, top_up, args.partitions, first=produced)
    produced += top_up
    lag = produced - done
    step(f"backlog, max_waiting {max_waiting}: {lag} records unread ({top_up} produced)")
    first_id = int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM events"))

    services[LISTENER] = listener = start_service(LISTENER, env, logs)
    waiting_peak = 0
    async with sampling(services) as samples:

        async def first_admission() -> bool:
            newest = await pool.fetchval("SELECT max(id) FROM events")
            return int(newest or 0) > first_id

        await poll(first_admission, 0.05)
        start = time.monotonic()
        found = memory_kib(listener.proc.pid)
        rss_start = found[0] if found else None
        deadline = start + args.backlog_seconds
        read = 0
        while time.monotonic() < deadline and read < lag:
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            read = int(await pool.fetchval("SELECT count(*) FROM events WHERE id > $1", first_id))
            waiting = await pool.fetchval("SELECT count(*) FROM instances WHERE state = 'waiting'")
            waiting_peak = max(waiting_peak, int(waiting))
        end = time.monotonic()
    window = end - start
    half, tenth = start + window / 2, window / 10
    first_half = samples.largest(LISTENER, start, half)
    second_half = samples.largest(LISTENER, half, end)
    in_window = [kib for at, kib in samples.rss.get(LISTENER, []) if start <= at <= end]
    ratio = round(second_half / first_half, 3) if first_half and second_half else None
    waiting_end = int(await pool.fetchval("SELECT count(*) FROM instances WHERE state = 'waiting'"))
    broker = memory_kib(broker_pid) if broker_pid else None
    return {
        "scenario": "memory",
        "phase": "backlog",
        "max_parallel_instances": args.max_parallel,
        "max_waiting": max_waiting,
        "backlog": lag,
        "produced_per_s": round(rate),
        "window_s": round(window, 1),
        "admitted": read,
        "admitted_per_s": round(read / window, 1) if window else None,
        "drained": read >= lag,
        "samples": len(in_window),
        LISTENER: {
            "rss_start_mib": mib(rss_start) if rss_start else None,
            "rss_max_mib": mib(max(in_window)) if in_window else None,
            "rss_end_mib": mib(in_window[-1]) if in_window else None,
            "max_first_half_mib": mib(first_half) if first_half else None,
            "max_second_half_mib": mib(second_half) if second_half else None,
            "second_to_first_half": ratio,
            "max_by_tenth_mib": [
                mib(kib) if kib else None
                for kib in (
                    samples.largest(LISTENER, start + i * tenth, start + (i + 1) * tenth)
                    for i in range(10)
                )
            ],
            "hwm_mib": mib(samples.hwm[LISTENER]) if LISTENER in samples.hwm else None,
            "bounded": ratio is not None and ratio <= BOUNDED_RATIO,
        },
        "rss_max_mib": per_service({name: samples.largest(name, start, end) for name in services}),
        "waiting_instances_peak": waiting_peak,
        "waiting_instances_end": waiting_end,
        "broker_rss_mib": mib(broker[0]) if broker else None,
    }, produced


async def main(args: argparse.Namespace) -> None:
    logs = Path(tempfile.mkdtemp(prefix="sluice-bench-logs-"))
    note(f"service logs: {logs}")
    async with (
        database(DATABASE) as dsn,
        EmbeddedKafka(backend="tansu", log_path=logs / "broker.log") as broker,
    ):
        await create_topics(broker.bootstrap, [TOPIC], args.partitions)
        pool = await create_pool(dsn, max_size=4)
        await publish(pool)
        env = listener_env(
            dsn,
            broker.bootstrap,
            f"bench-memory-{uuid.uuid4().hex[:8]}",
            SLUICE_HOST="127.0.0.1",
            SLUICE_API_PORT=str(free_port()),
            SLUICE_WEBHOOK_PORT=str(free_port()),
            SLUICE_DRAIN_TIMEOUT_S="5",
        )
        services: dict[str, Service] = {}
        try:
            for name in MEMORY_SERVICES:
                services[name] = start_service(name, env, logs)
            await wait_ready(list(services.values()))
            step("services ready")
            # Warm-up (not measured): the listener has joined its group, a run went through.
            produced = 0
            await produce(broker.bootstrap, TOPIC, WARMUP, args.partitions, first=produced)
            produced += WARMUP
            await drained(pool, produced)

            step("warm-up done")
            idle = await idle_phase(services, args)
            emit(idle)
            emit(await intake_phase(services, pool, broker.bootstrap, args, idle, produced))
            step("intake done")
            produced += args.messages
            for bound in (args.max_waiting, None):
                result, produced = await backlog_phase(
                    services, pool, broker.bootstrap, env, logs, args, bound, produced, broker.pid
                )
                emit(result)
                step("backlog window done")
        finally:
            step("stopping services")
            await asyncio.gather(*(stop_service(s) for s in services.values()))
            await pool.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=None, help="intake records (20,000)")
    parser.add_argument("--backlog", type=int, default=None, help="unread records (1,000,000)")
    parser.add_argument(
        "--backlog-seconds", type=float, default=120.0, help="sampled window per backlog run"
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=4,
        help="policy.max_parallel_instances of the backlog runs (slower than intake)",
    )
    parser.add_argument("--max-waiting", type=int, default=1000, help="policy.max_waiting")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--settle-s", type=float, default=5.0, help="quiet before idle sampling")
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle sampling window")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5,000 intake records, a backlog of 100,000",
    )
    args = parser.parse_args(argv)
    for name, full, quick in (
        ("messages", 20_000, 5_000),
        ("backlog", 1_000_000, 100_000),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
