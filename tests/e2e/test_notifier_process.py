"""`sluice run notifier` as a real process: delivers, stops cleanly on SIGTERM, and refuses a bad
setting with one line naming the variable."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from shared.db.notifications import enqueue_test
from shared.models.notifications import NotifyRule
from tests.factories import DEFAULT_WS
from tests.support.api import SLUICE
from tests.support.executor import Pool
from tests.support.notifier import notifier_env, wait_rows
from tests.support.receivers import http_receiver


async def test_sluice_run_notifier_delivers_and_stops_on_sigterm(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    async with http_receiver() as hook:
        rule = NotifyRule(on=["failure"], channel="feishu", url=hook.url)
        async with pool.acquire() as conn:
            await enqueue_test(conn, DEFAULT_WS, rule)
        log = tmp_path / "notifier.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                SLUICE, "run", "notifier", env=notifier_env(db_url), stdout=out, stderr=out
            )
        try:
            await wait_rows(pool, "SELECT 1 FROM notifications WHERE state = 'sent'")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert hook.requests[0].json()["msg_type"] == "text"
        text = log.read_text()
        assert "notifier_started" in text and "notifier_stopped" in text


async def test_bad_setting_fails_at_start_naming_the_variable(db_url: str) -> None:
    env = notifier_env(db_url, SLUICE_NOTIFY_MAX_ATTEMPTS="0")
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "run",
        "notifier",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines[0].startswith("invalid configuration: SLUICE_NOTIFY_MAX_ATTEMPTS:"), lines
