"""Kafka listener test helpers: run the listener in-process or as a real process, bind triggers to
workflows, produce records, and wait on database state (woken by NOTIFY, never fixed sleeps).

    from tests.support.kafka_listener import running_listener, bind, wait_events
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from services.dev.servers.kafka import EmbeddedKafka
from services.kafka_listener.service import run
from shared.kafka.config import ListenerSettings
from shared.models.workflows import WorkflowSpec
from shared.settings import Settings, load_settings
from tests.factories import add_trigger, add_workflow, kafka_trigger, workflow
from tests.integration.kafka_support import WAIT_S, group_id, group_timing, producer
from tests.support.secrets import TEST_SECRET_KEY

Pool: TypeAlias = "asyncpg.Pool[Any]"
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).with_name("sluice"))
FAST: dict[str, Any] = {
    "resubscribe_interval_s": 0.5,
    "probe_interval_s": 0.5,
    "probe_timeout_s": 1.0,
    "backoff_max_s": 1.0,
    "metadata_max_age_ms": 500,
    "commit_timeout_s": 5.0,
    "revoke_wait_s": 5.0,
}
"""Short intervals: tests wait on outcomes, and these bound how long outcomes take."""


def listener_config(broker: EmbeddedKafka, **overrides: Any) -> ListenerSettings:
    """Listener settings for tests: group timings that keep the embedded broker fast."""
    values: dict[str, Any] = {**group_timing(broker.backend), **FAST, **overrides}
    return ListenerSettings(**values)


def settings_for(db_url: str, broker: EmbeddedKafka, group: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "kafka_bootstrap": broker.bootstrap,
        "kafka_group_id": group,
        "drain_timeout_s": 5,
        "db_pool_max": 5,
        "metrics_port": 0,
        **overrides,
    }
    return load_settings(**values)


@dataclass
class RunningListener:
    """A Kafka listener service running in this process."""

    group: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        self.stop.set()
        async with asyncio.timeout(WAIT_S):
            await self.task


@asynccontextmanager
async def running_listener(
    db_url: str,
    broker: EmbeddedKafka,
    *,
    group: str | None = None,
    settings: dict[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[RunningListener]:
    """`services.kafka_listener.service.run` in a task; stopped (errors raised) on exit."""
    group = group or group_id()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            settings_for(db_url, broker, group, **(settings or {})),
            stop,
            config=listener_config(broker, **config),
        )
    )
    running = RunningListener(group, stop, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.shutdown()
        else:
            task.result()


def listener_env(db_url: str, broker: EmbeddedKafka, group: str, **extra: str) -> dict[str, str]:
    """Environment of a `sluice run kafka-listener` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    timing = group_timing(broker.backend)
    env.update(
        {
            "SLUICE_DATABASE_URL": db_url,
            "SLUICE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "SLUICE_KAFKA_GROUP_ID": group,
            "SLUICE_KAFKA_SESSION_TIMEOUT_MS": str(timing["session_timeout_ms"]),
            "SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS": str(timing["heartbeat_interval_ms"]),
            "SLUICE_KAFKA_RESUBSCRIBE_INTERVAL_S": "0.5",
            "SLUICE_KAFKA_PROBE_INTERVAL_S": "0.5",
            "SLUICE_KAFKA_PROBE_TIMEOUT_S": "1",
            "SLUICE_KAFKA_BACKOFF_MAX_S": "1",
            "SLUICE_KAFKA_METADATA_MAX_AGE_MS": "500",
            "SLUICE_LOG_FORMAT": "json",
            "SLUICE_METRICS_PORT": "0",
            "SLUICE_DRAIN_TIMEOUT_S": "5",
            "SLUICE_SECRET_KEY": TEST_SECRET_KEY,
            **extra,
        }
    )
    return env


@asynccontextmanager
async def listener_process(
    db_url: str, broker: EmbeddedKafka, group: str, log_path: Path, **extra_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`sluice run kafka-listener` as a real process; SIGKILLed if still alive on exit."""
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            SLUICE,
            "run",
            "kafka-listener",
            cwd=str(ROOT),
            env=listener_env(db_url, broker, group, **extra_env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def bind(
    pool: Pool,
    topic: str,
    *,
    trigger: str = "kt",
    workflow_spec: WorkflowSpec | None = None,
    workspace_id: int = 1,
    **trigger_fields: Any,
) -> None:
    """A Kafka trigger on `topic` and a published workflow bound to it."""
    spec = workflow_spec or workflow(f"wf_{trigger}", trigger=trigger)
    async with pool.acquire() as conn:
        await add_trigger(conn, kafka_trigger(trigger, topic, **trigger_fields), workspace_id)
        await add_workflow(conn, spec, workspace_id=workspace_id)


async def send(
    broker: EmbeddedKafka,
    topic: str,
    values: list[bytes | None],
    *,
    keys: list[bytes | None] | None = None,
    headers: list[list[tuple[str, bytes]]] | None = None,
    partition: int | None = 0,
) -> list[int]:
    """Produce records in order (one partition by default); returns their offsets."""
    offsets = []
    async with producer(broker, max_request_size=8 << 20) as client:
        for i, value in enumerate(values):
            sent = await client.send_and_wait(
                topic,
                value,
                key=keys[i] if keys else None,
                headers=headers[i] if headers else [],
                partition=partition,
            )
            offsets.append(sent.offset)
    return offsets


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float = WAIT_S) -> T:
    """Re-run `check` until it returns something other than None; fail after `timeout_s`.

    It is woken by intake's NOTIFY (`sluice_instances`) and re-checks every 20 ms otherwise.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            result = await check()
            if result is not None:
                return result
            await asyncio.sleep(0.02)


async def wait_events(pool: Pool, count: int, subject: str | None = None) -> list[Any]:
    """Wait until at least `count` events are recorded (of `subject`); all of them, by id."""
    sql = "SELECT * FROM events" + (" WHERE subject = $1" if subject else "") + " ORDER BY id"
    args = [subject] if subject else []

    async def recorded() -> list[Any] | None:
        rows = await pool.fetch(sql, *args)
        return list(rows) if len(rows) >= count else None

    return await eventually(recorded)


async def outcomes_by_ref(pool: Pool) -> dict[str, list[tuple[str, str | None]]]:
    """Per event ref (topic/partition/offset), every (outcome, detail), events in id order."""
    rows = await pool.fetch(
        "SELECT e.ref, o.outcome, o.detail FROM events e "
        "JOIN event_outcomes o ON o.event_id = e.id ORDER BY e.id, o.seq"
    )
    out: dict[str, list[tuple[str, str | None]]] = {}
    for r in rows:
        out.setdefault(r["ref"], []).append((r["outcome"], r["detail"]))
    return out


async def instance_count(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM instances"))


async def committed(
    broker: EmbeddedKafka, group: str, topic: str, partition: int = 0
) -> int | None:
    """The group's committed offset of one partition, read without joining the group."""
    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await reader.start()
    try:
        offset = await reader.committed(TopicPartition(topic, partition))
    finally:
        await reader.stop()
    return None if offset is None else int(offset)


async def wait_committed(
    broker: EmbeddedKafka, group: str, topic: str, offset: int, partition: int = 0
) -> None:
    """Wait until the group has committed at least `offset` on the partition."""

    async def reached() -> bool | None:
        value = await committed(broker, group, topic, partition)
        return True if value is not None and value >= offset else None

    await eventually(reached)


class TcpProxy:
    """Forwards TCP connections to a server; `cut()` drops every connection and refuses new ones
    until `restore()`: a database outage as its clients see it, without touching the server.

    The target is `(host, port)` or the path of a Unix socket (the embedded PostgreSQL's).
    """

    def __init__(self, target: tuple[str, int] | str) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = True
        self.port = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def cut(self) -> None:
        """Close every proxied connection; new ones are closed as soon as they are accepted."""
        self._open = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._open = True

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self._target, str):
            return await asyncio.open_unix_connection(self._target)
        return await asyncio.open_connection(*self._target)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await self._connect()
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()


def database_target(dsn: str) -> tuple[str, int] | str:
    """Where a PostgreSQL DSN connects: (host, port), or the Unix socket path."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    port = parts.port or int(query.get("port", 5432))
    socket_dir = query.get("host") or (
        parts.hostname if (parts.hostname or "").startswith("/") else None
    )
    if socket_dir:
        return f"{socket_dir}/.s.PGSQL.{port}"
    return parts.hostname or "127.0.0.1", port


def via_proxy(dsn: str, proxy: TcpProxy) -> str:
    """`dsn` connecting through the proxy over TCP instead."""
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"127.0.0.1:{proxy.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
    return urlunsplit(
        parts._replace(netloc=f"{credentials}@{address}" if credentials else address, query=query)
    )


def sample(name: str, **labels: str) -> float:
    """The current value of a metric sample of this process (0 when it was never set)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
