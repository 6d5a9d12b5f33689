"""`sluice run scheduler` as real processes, and `sluice backfill` through the real API."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from tests.support.api import ROOT, SLUICE, api_subprocess, sluice_cli, sluice_env
from tests.support.scheduler import Pool, eventually, publish, scheduled, stored_instances


def _fired_in(log: Path) -> list[datetime]:
    """Fire times a scheduler process logged as fired."""
    fired = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "schedule_fired":
            fired.append(datetime.fromisoformat(entry["fire_time"]))
    return fired


async def _count_at_least(pool: Pool, count: int) -> None:
    async def enough() -> bool:
        return len(await stored_instances(pool)) >= count

    await eventually(enough, timeout_s=30)


async def test_two_scheduler_processes_fire_each_second_once_and_survive_a_crash(
    db_url: str, pool: Pool, tmp_path: Path
) -> None:
    """Two replicas race for every fire time of an every-second schedule; one is SIGKILLed and
    the other carries on alone, then stops cleanly on SIGTERM. No second is missed or doubled."""
    env = sluice_env(db_url, SLUICE_POLL_INTERVAL_S="5")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    for log in logs:
        with log.open("wb") as sink:
            procs.append(
                await asyncio.create_subprocess_exec(
                    SLUICE,
                    "run",
                    "scheduler",
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                )
            )
    try:
        await publish(pool, scheduled("every_second", "* * * * * ?"))
        await _count_at_least(pool, 4)
        procs[0].send_signal(signal.SIGKILL)
        await asyncio.wait_for(procs[0].wait(), 10)
        survivors_from = len(await stored_instances(pool))
        await _count_at_least(pool, survivors_from + 3)
        procs[1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(procs[1].wait(), 15) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    stored = sorted(s.cyctime for s in await stored_instances(pool))
    assert stored == [stored[0] + timedelta(seconds=n) for n in range(len(stored))]
    first, second = _fired_in(logs[0]), _fired_in(logs[1])
    assert not set(first) & set(second)
    assert set(first) | set(second) <= set(stored)
    # The killed replica may have died between a commit and its log line, never the reverse.
    assert len(set(stored) - set(first) - set(second)) <= 1
    assert "scheduler_stopped" in logs[1].read_text()


async def test_sluice_backfill_through_the_api(db_url: str, pool: Pool) -> None:
    await publish(pool, scheduled("daily_report", "0 0 2 ? * *", "Asia/Shanghai"))
    async with api_subprocess(db_url) as server:
        result = await sluice_cli(
            server,
            "backfill",
            "daily_report",
            "--start",
            "2026-11-01T00:00:00+08:00",
            "--end",
            "2026-11-10T23:59:59+08:00",
            "--parallelism",
            "2",
            "--order",
            "desc",
            "--json",
        )
        assert result.code == 0, result.err
        answer = result.json()
        refused = await sluice_cli(
            server, "backfill", "nope", "--start", "2026-11-01T00:00Z", "--end", "2026-11-02T00:00Z"
        )
    assert (answer["workflow"], answer["parallelism"]) == ("daily_report", 2)
    assert answer["order"] == "desc"
    assert len(answer["instance_ids"]) == 10
    stored = await stored_instances(pool, kind="backfill")
    assert [s.bizdate.isoformat() for s in stored if s.bizdate] == [
        f"2026-11-{day:02d}" for day in range(9, 0, -1)
    ] + ["2026-10-31"]
    assert refused.code == 1
    assert "nope" in refused.err
