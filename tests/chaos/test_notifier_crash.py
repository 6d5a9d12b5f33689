"""A notifier killed with SIGKILL between sending and marking: nothing is lost, and each
message reaches the receiver at most once more, with the same id."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from shared.db.notifications import enqueue_test
from shared.models.notifications import NotifyRule
from tests.factories import DEFAULT_WS
from tests.support.executor import Pool
from tests.support.notifier import notifier_process, wait_rows
from tests.support.receivers import Request, http_receiver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]
MESSAGES = 5


async def test_kill_between_send_and_mark_redelivers_the_same_ids(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    killed = asyncio.Event()
    victim: list[asyncio.subprocess.Process] = []

    async def kill_first_sender(_request: Request) -> None:
        # The message has arrived; the notifier dies before it hears the answer and marks it.
        if not killed.is_set():
            killed.set()
            os.kill(victim[0].pid, signal.SIGKILL)
            await victim[0].wait()

    async with http_receiver(before_answer=kill_first_sender) as hook:
        rule = NotifyRule(on=["failure"], channel="webhook", url=hook.url)
        async with pool.acquire() as conn:
            ids = [await enqueue_test(conn, DEFAULT_WS, rule) for _ in range(MESSAGES)]
        log = tmp_path / "notifier.log"
        async with notifier_process(db_url, log, SLUICE_NOTIFY_LEASE_S="600") as first:
            victim.append(first)
            await asyncio.wait_for(killed.wait(), 60)
            assert await first.wait() == -signal.SIGKILL
        before = await pool.fetch("SELECT id, state, lease_token FROM notifications ORDER BY id")
        assert all(r["state"] == "pending" or r["state"] == "sent" for r in before)
        in_flight = [r["id"] for r in before if r["lease_token"] is not None]
        assert in_flight, "the killed notifier held leases"
        # Move time: the dead notifier's leases (600 s) have expired.
        await pool.execute(
            "UPDATE notifications SET lease_expires_at = now() - interval '1 second' "
            "WHERE lease_token IS NOT NULL"
        )
        async with notifier_process(db_url, log):
            rows = await wait_rows(
                pool, "SELECT id FROM notifications WHERE state = 'sent'", count=MESSAGES
            )
        assert sorted(r["id"] for r in rows) == ids
        received = Counter(r.headers["idempotency-key"] for r in hook.requests)
        stored = {
            r["message_id"]
            for r in await pool.fetch("SELECT message_id::text AS message_id FROM notifications")
        }
        assert set(received) == stored, "every message arrived"
        assert max(received.values()) <= 2, "at most once more"
        assert sum(received.values()) - MESSAGES <= len(in_flight)
        assert any(count == 2 for count in received.values()), "the killed send was repeated"
