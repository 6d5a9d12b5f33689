"""The fallback release of dependants (dependencies between workflows).

An upstream's success releases its dependants in its own final transaction. A dependant created
while that transaction was in flight is invisible to it, and the dependant's creation in turn
did not yet see the success: this loop closes such rows every poll interval. It looks only at
dependants created within `WINDOW_S`; older ones were created long after any such race.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from shared.db.dependencies import release_missed
from shared.db.errors import TRANSIENT
from shared.lifecycle import wait_any

log = structlog.get_logger("sluice.scheduler.releases")
WINDOW_S = 3600.0
_TRANSIENT = TRANSIENT


async def serve_releases(pool: asyncpg.Pool[Any], stop: asyncio.Event, *, poll_s: float) -> None:
    """Run `release_missed` every `poll_s` until stop."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await release_missed(conn, WINDOW_S)
        except _TRANSIENT as exc:
            log.warning("dependency_release_check_failed", error=str(exc))
        await wait_any(stop, None, poll_s)
