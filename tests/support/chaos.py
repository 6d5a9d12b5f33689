"""Helpers of the chaos suite: count every message by its own id in the database, report each
scenario in one line, and poll real processes and servers with deadlines.

Every scenario sends messages that carry a unique `id`, breaks something real (kill -9, SIGSTOP,
a stopped server), and then counts the instances per id: an id without an instance is lost, an
id with more than one is duplicated. `summary` prints

    chaos: scenario=<name> sent=N admitted=N lost=0 duplicated=0 recover_s=X.X

and keeps the line for the suite's closing report (tests/chaos/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import asyncpg
import httpx
import psutil

Pool: TypeAlias = "asyncpg.Pool[Any]"
T = TypeVar("T")
SUMMARIES: list[str] = []
"""Every summary line printed in this session, in order."""


def message_ids(prefix: str, count: int) -> list[str]:
    """`count` unique message ids, in send order."""
    return [f"{prefix}-{n:05d}" for n in range(count)]


@dataclass(frozen=True)
class Tally:
    """What the database holds for the messages sent."""

    sent: int
    admitted: int
    lost: list[str]
    duplicated: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated


def tally(sent: Iterable[str], found: Iterable[str]) -> Tally:
    """Compare the ids sent with the ids found (one per instance): lost and duplicated ids."""
    wanted = list(sent)
    counts = Counter(found)
    lost = [m for m in wanted if counts[m] == 0]
    duplicated = {m: n for m, n in counts.items() if n > 1}
    return Tally(len(wanted), sum(1 for m in wanted if counts[m] > 0), lost, duplicated)


async def kafka_ids(pool: Pool) -> list[str]:
    """The message id of every instance started by a Kafka record (`value.id`), one per row."""
    rows = await pool.fetch("SELECT trigger_message->'value' AS value FROM instances")
    out = []
    for row in rows:
        value = row["value"]
        if isinstance(value, str):
            value = json.loads(value)
        out.append(str(value["id"]))
    return out


async def s3_keys(pool: Pool) -> list[str]:
    """The object key of every instance started by an S3 event, one per row."""
    rows = await pool.fetch(
        "SELECT trigger_message #>> '{data,s3,object,key}' AS key FROM instances"
    )
    return [str(r["key"]) for r in rows]


def summary(scenario: str, result: Tally, recover_s: float) -> str:
    """Print and keep the scenario's one summary line."""
    line = (
        f"chaos: scenario={scenario} sent={result.sent} admitted={result.admitted} "
        f"lost={len(result.lost)} duplicated={sum(n - 1 for n in result.duplicated.values())} "
        f"recover_s={recover_s:.1f}"
    )
    SUMMARIES.append(line)
    # The chaos suite's report is printed, not logged: it is read at the terminal.
    print(line, flush=True)  # noqa: T201
    return line


async def poll(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, every_s: float = 0.1
) -> T:
    """Re-run `check` until it returns something other than None; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
        await asyncio.sleep(every_s)


async def settled_ids(
    found: Callable[[], Awaitable[list[str]]], sent: list[str], *, timeout_s: float
) -> list[str]:
    """The ids found once every sent id is there (or at the deadline, what there is)."""
    wanted = set(sent)
    deadline = time.monotonic() + timeout_s
    while True:
        ids = await found()
        if wanted <= set(ids) or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(0.2)


def kill_hard(pid: int) -> None:
    """kill -9."""
    os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (also stopped), not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def ready(port: int) -> bool:
    """Whether a service's `/readyz` on `port` answers 200."""
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


SLUICE = str(Path(sys.executable).with_name("sluice"))
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def service_process(
    service: str, env: dict[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`sluice run <service>` as a real process; SIGKILLed if still alive on exit."""
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            SLUICE,
            "run",
            service,
            cwd=str(ROOT),
            env=env,
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
