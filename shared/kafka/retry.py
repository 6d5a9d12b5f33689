"""Retry pacing and interruptible waits of the Kafka intake."""

from __future__ import annotations

import asyncio


class Backoff:
    """Exponential retry delays: 0.5 s, 1 s, 2 s, ... up to ``maximum``; ``reset`` on success."""

    def __init__(self, maximum: float, first: float = 0.5) -> None:
        self._maximum = maximum
        self._first = min(first, maximum)
        self._current = 0.0

    def next(self) -> float:
        """The delay before the next try."""
        self._current = min(self._maximum, self._current * 2 if self._current else self._first)
        return self._current

    def reset(self) -> None:
        self._current = 0.0


async def wait_for_event(event: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` or ``stop`` is set or ``timeout_s`` passes; True when ``event`` is."""
    if event.is_set():
        return True
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return event.is_set()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True when stopping."""
    if not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
    return stop.is_set()
