"""Process lifecycle: signals set `stop`, services drain, side tasks are supervised together."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("sluice.lifecycle")
_DEBOUNCE_S = 1.0


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT only set `stop`; a second signal (a second later) exits at once."""
    loop = asyncio.get_running_loop()
    first: list[float] = []

    def handle(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            # Wrappers (timeout, shells, process managers) often forward the same signal a
            # moment later: only a deliberate second signal skips the drain.
            if first and loop.time() - first[0] > _DEBOUNCE_S:
                log.warning("second_signal_exiting", signal=name)
                raise SystemExit(130)
            return
        first.append(loop.time())
        log.info("stop_requested", signal=name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


async def wait_any(stop: asyncio.Event, notified: asyncio.Event | None, poll_s: float) -> None:
    """Wake on NOTIFY, on stop, or after `poll_s` (the polling fallback), whichever is first."""
    waits: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait())]
    if notified is not None:
        waits.append(asyncio.create_task(notified.wait()))
    try:
        await asyncio.wait(waits, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if notified is not None:
        notified.clear()


async def run_until_stopped(
    stop: asyncio.Event, *mains: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run service mains side by side in one TaskGroup: if one dies, all stop and it re-raises."""
    async with asyncio.TaskGroup() as group:
        for main in mains:
            group.create_task(_stop_on_exit(main, stop))


async def _stop_on_exit(
    main: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    try:
        await main(stop)
    finally:
        stop.set()
