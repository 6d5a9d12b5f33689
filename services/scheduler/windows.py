"""Closing coalescing windows whose time is up when no further event arrives to close them.

An admission that finds its window due closes it itself; this loop closes the rest as soon as
they are due (it sleeps until the earliest `closes_at`, at most `poll_s`). Each pass closes due
windows in one transaction under `FOR UPDATE SKIP LOCKED`, so replicas share the work and a
closer killed mid-pass leaves the windows open and due for the next pass.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from shared.db import coalesce_windows
from shared.db.errors import TRANSIENT
from shared.lifecycle import wait_any

log = structlog.get_logger("sluice.scheduler.windows")
_TRANSIENT = TRANSIENT
# Windows closed per transaction: a long backlog is closed in several short transactions.
BATCH = 100
# A window that opens while the loop sleeps is seen after at most this long.
_MAX_SLEEP_S = 1.0


async def serve_windows(pool: asyncpg.Pool[Any], stop: asyncio.Event, *, poll_s: float) -> None:
    """Close due windows until stop."""
    while not stop.is_set():
        delay = min(poll_s, _MAX_SLEEP_S)
        try:
            closed = await coalesce_windows.close_due(pool, BATCH)
            if len(closed) == BATCH:
                continue
            upcoming = await coalesce_windows.next_due(pool)
            if upcoming is not None:
                delay = min(delay, max((upcoming - datetime.now(UTC)).total_seconds(), 0.0))
        except _TRANSIENT as exc:
            log.warning("coalesce_close_failed", error=str(exc))
        await wait_any(stop, None, delay + 0.001)
