"""Waiting on several asyncio events at once (NOTIFY wake-ups, stop, closing) with a timeout."""

from __future__ import annotations

import asyncio


async def first_set(*events: asyncio.Event, wait_s: float | None = None) -> None:
    """Return as soon as any event is set, or after `wait_s` seconds (None: no limit)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
