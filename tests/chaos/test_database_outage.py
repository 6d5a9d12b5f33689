"""PostgreSQL stopped for 20 s while Kafka messages arrive and nodes run.

A PostgreSQL server of this scenario's own (stopping the suite's would fail every other test),
real `sluice run` processes of every service (kafka-listener, storage-listener, executor,
scheduler, notifier, api). Every service must come back by itself: the same processes (no crash
loop, no restart), `/readyz` 200 again, every message admitted exactly once and every run
finished.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from services.dev.servers.kafka import EmbeddedKafka
from services.dev.servers.postgres import EmbeddedPostgres
from services.dev.servers.process import free_port
from shared.db.migrate import migrate
from shared.db.pool import connect, create_pool
from tests.chaos.test_kafka_intake import produce
from tests.factories import shell_node, workflow
from tests.integration.kafka_support import TopicFactory, group_id
from tests.support.api import sluice_env
from tests.support.chaos import (
    Pool,
    alive,
    kafka_ids,
    message_ids,
    poll,
    ready,
    service_process,
    settled_ids,
    summary,
    tally,
)
from tests.support.executor import executor_env
from tests.support.kafka_listener import bind, listener_env

OUTAGE_S = 20.0
FINAL = ("succeeded", "failed", "terminated", "cancelled")


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    # Outside pytest's private temporary tree: the server may run as an unprivileged user.
    with tempfile.TemporaryDirectory(prefix="sluice-chaos-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        dsn = await asyncio.to_thread(server.start)
        try:
            conn = await connect(dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()
            yield server, dsn
        finally:
            await asyncio.to_thread(server.stop)


def tail(log: Path, lines: int = 15) -> str:
    """The end of a service's log, for the failure message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def unfinished(pool: Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM instances WHERE state <> ALL($1::text[])", list(FINAL)
        )
    )


@pytest.mark.timeout(300)
async def test_postgres_stopped_for_20_seconds_while_messages_arrive_and_nodes_run(
    own_postgres: tuple[EmbeddedPostgres, str],
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
    tmp_path: Path,
) -> None:
    server, dsn = own_postgres
    topic = await kafka_topics(partitions=2)
    setup = await create_pool(dsn, min_size=1, max_size=2)
    try:
        await bind(
            setup,
            topic.name,
            workflow_spec=workflow(
                "wf_kt",
                trigger="kt",
                nodes=[shell_node("a", code="sleep 0.2", retries=3, retry_delay_s=0)],
            ),
        )
    finally:
        await setup.close()
    ids = message_ids("pgdown", 400)
    services = ("kafka-listener", "executor", "api", "scheduler", "storage-listener", "notifier")
    ports = {name: free_port() for name in services}
    envs: dict[str, dict[str, Any]] = {
        "kafka-listener": listener_env(
            dsn, kafka_broker, group_id(), SLUICE_METRICS_PORT=str(ports["kafka-listener"])
        ),
        "executor": executor_env(dsn, SLUICE_METRICS_PORT=str(ports["executor"])),
        "api": sluice_env(
            dsn,
            SLUICE_API_PORT=str(free_port()),
            SLUICE_METRICS_PORT=str(ports["api"]),
            SLUICE_HOST="127.0.0.1",
        ),
        "scheduler": sluice_env(dsn, SLUICE_METRICS_PORT=str(ports["scheduler"])),
        "notifier": sluice_env(dsn, SLUICE_METRICS_PORT=str(ports["notifier"])),
        "storage-listener": sluice_env(
            dsn,
            SLUICE_METRICS_PORT=str(ports["storage-listener"]),
            SLUICE_WEBHOOK_PORT=str(free_port()),
            SLUICE_WEBHOOK_TOKENS="chaos-token",
            SLUICE_HOST="127.0.0.1",
        ),
    }

    async def all_ready() -> bool | None:
        answers = await asyncio.gather(*(ready(port) for port in ports.values()))
        return True if all(answers) else None

    async with AsyncExitStack() as stack:
        procs = {
            name: await stack.enter_async_context(
                service_process(name, env, tmp_path / f"{name}.log")
            )
            for name, env in envs.items()
        }
        pids = {name: proc.pid for name, proc in procs.items()}
        await poll(all_ready, timeout_s=60, what="every service ready")
        sending = asyncio.create_task(
            produce(kafka_broker, topic.name, ids, per_s=12, partitions=topic.partitions)
        )
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:

            async def some_admitted() -> int | None:
                n = int(await pool.fetchval("SELECT count(*) FROM instances"))
                return n if n >= 60 else None

            await poll(some_admitted, timeout_s=60, what="60 instances before the outage")
        finally:
            await pool.close()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
        dead = [name for name, pid in pids.items() if not alive(pid)]
        assert not dead, f"died during the outage: {dead}\n" + "\n".join(
            tail(tmp_path / f"{name}.log") for name in dead
        )
        restarted_dsn = await asyncio.to_thread(server.start)
        assert restarted_dsn == dsn
        back = time.monotonic()
        await poll(all_ready, timeout_s=90, what="every service ready after the outage")
        recover_s = time.monotonic() - back
        await sending
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            found = await settled_ids(lambda: kafka_ids(pool), ids, timeout_s=90)

            async def all_finished() -> bool | None:
                return True if await unfinished(pool) == 0 else None

            await poll(all_finished, timeout_s=120, what="every run finished")
            rows = await pool.fetch("SELECT state, count(*) AS n FROM instances GROUP BY state")
            states = {str(r["state"]): int(r["n"]) for r in rows}
        finally:
            await pool.close()
        # The same processes throughout: none exited and came back, none is looping.
        assert {name: proc.returncode for name, proc in procs.items()} == dict.fromkeys(procs)
        assert {name: proc.pid for name, proc in procs.items()} == pids
    result = tally(ids, found)
    summary("postgres-stopped-20s", result, recover_s)
    assert result.lost == [] and result.duplicated == {}
    assert set(states) <= set(FINAL)
    assert states.get("succeeded", 0) == len(ids), states
