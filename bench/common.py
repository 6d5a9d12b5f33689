"""Shared benchmark plumbing: a PostgreSQL server, fresh migrated databases, executor processes,
JSON-line output.

The server is the embedded one (`pgserver`, in a temporary directory) unless
`SLUICE_BENCH_DATABASE_URL` names a server the benchmark may create databases on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from services.dev.servers.postgres import EmbeddedPostgres, with_database
from shared.db.migrate import migrate
from shared.db.pool import connect
from shared.secret_box import generate_key

ROOT = Path(__file__).resolve().parents[1]


def emit(record: dict[str, Any]) -> None:
    """One result as one JSON line on stdout."""
    print(json.dumps(record, sort_keys=False), flush=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """DSN of a server benchmarks may create databases on."""
    external = os.environ.get("SLUICE_BENCH_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="sluice-bench-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        dsn = server.start()
        try:
            yield dsn
        finally:
            server.stop()


@asynccontextmanager
async def fresh_database(server_dsn: str, name: str) -> AsyncIterator[str]:
    """A new database with the sluice schema, dropped afterwards."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


# One connection-secret key per benchmark run, for its in-process services and its processes.
BENCH_SECRET_KEY = os.environ.setdefault("SLUICE_SECRET_KEY", generate_key())


def sluice_env(dsn: str, **extra: str) -> dict[str, str]:
    """Environment of a sluice service process on `dsn` (quiet logs, no probe port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_DATABASE_URL": dsn,
            "SLUICE_LOG_FORMAT": "json",
            "SLUICE_LOG_LEVEL": "warning",
            "SLUICE_METRICS_PORT": "0",
            "SLUICE_SECRET_KEY": BENCH_SECRET_KEY,
            **extra,
        }
    )
    return env


@asynccontextmanager
async def executor_processes(
    dsn: str, count: int, log_dir: Path, **env: str
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """`count` executor processes; SIGTERM on exit (SIGKILL if they linger)."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for index in range(count):
            with (log_dir / f"executor-{index}.log").open("ab") as out:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "services.executor",
                        cwd=str(ROOT),
                        env=sluice_env(dsn, SLUICE_EXECUTOR_ID=f"bench-{index}", **env),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
