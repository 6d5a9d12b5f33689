"""Notifier test helpers: run the notifier in-process or as a real process, wait for outbox
rows to reach a state (woken by NOTIFY, re-checked every 50 ms), move time by backdating rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from services.notifier.config import NotifierConfig
from services.notifier.service import run_notifier
from shared.settings import load_settings
from tests.support.api import sluice_env

Pool: TypeAlias = "asyncpg.Pool[Any]"
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
TEST_CONFIG: dict[str, Any] = {
    "allow_private": True,
    "poll_interval_s": 0.2,
    "sla_interval_s": 0.2,
    "backoff_s": 30.0,
    "lease_s": 30.0,
    "timeout_s": 5.0,
    "console_url": "http://console.test",
}


@asynccontextmanager
async def running_notifier(db_url: str, **overrides: Any) -> AsyncIterator[asyncio.Task[None]]:
    """A notifier inside the test's event loop; stopped (and its errors raised) on exit."""
    settings = load_settings(database_url=db_url)
    config = NotifierConfig(**{**TEST_CONFIG, **overrides})
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, config, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def notifier_env(db_url: str, **extra: str) -> dict[str, str]:
    env = sluice_env(db_url)
    for name, value in TEST_CONFIG.items():
        key = "SLUICE_CONSOLE_URL" if name == "console_url" else f"SLUICE_NOTIFY_{name.upper()}"
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(extra)
    return env


@asynccontextmanager
async def notifier_process(
    db_url: str, log_path: Path, **extra_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.notifier` as a real process; SIGKILLed if still alive on exit."""
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.notifier",
            cwd=str(ROOT),
            env=notifier_env(db_url, **extra_env),
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


async def wait_rows(
    pool: Pool, query: str, *args: Any, count: int = 1, timeout_s: float = WAIT_S
) -> list[asyncpg.Record]:
    """Wait until `query` returns at least `count` rows; return them."""
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    conn = await pool.acquire()
    try:
        await conn.add_listener("sluice_notifications", wake)
        async with asyncio.timeout(timeout_s):
            while True:
                woken.clear()
                rows = await pool.fetch(query, *args)
                if len(rows) >= count:
                    return rows
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), 0.05)
    finally:
        await conn.remove_listener("sluice_notifications", wake)
        await pool.release(conn)


async def make_due(pool: Pool) -> None:
    """Move time: every pending retry is due now (instead of waiting out its backoff)."""
    await pool.execute(
        "UPDATE notifications SET next_at = now() - interval '1 second' WHERE state = 'pending'"
    )
    await pool.execute("SELECT pg_notify('sluice_notifications', '')")
