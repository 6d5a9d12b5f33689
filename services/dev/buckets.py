"""`sluice dev`: every bucket named by an s3 trigger exists in the embedded S3 and notifies the
dev queue, within about a second of the trigger's creation.

Run `run(database_url, s3, stop, queue_arn=...)` as a side task of `sluice dev`, next to the
storage listener reading that queue (`SLUICE_SQS_QUEUE_URLS`). It wakes on the `sluice_triggers`
NOTIFY that every trigger change sends, and re-checks every `poll_s` as a fallback (a missed
notification, a bucket removed by hand)::

    async with EmbeddedS3(port) as s3:              # services.dev.servers.s3
        queue = await buckets.dev_queue(s3)
        settings = load_settings(**s3.settings_overrides(), sqs_queue_urls=queue.url, ...)
        # side by side with the services (storage-listener reads queue.url):
        await buckets.run(settings.database_url, s3, stop, queue_arn=queue.arn)

The storage listener knows nothing of this: it reads the queue it is configured with, whoever
wired the buckets to it. S3 failures are logged and retried at the next round; they never stop
`sluice dev`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import structlog

from services.dev.servers.s3 import EmbeddedS3, Queue, ensure_queue, wire_bucket
from shared.db.pool import Executor, connect
from shared.db.queries import load
from shared.db.triggers import CHANNEL
from shared.lifecycle import wait_any

Q = load(__file__)
log = structlog.get_logger("sluice.dev.buckets")

DEV_QUEUE: Final = "sluice-dev-events"
"""The queue name `sluice dev` creates for bucket notifications."""


async def dev_queue(s3: EmbeddedS3, name: str = DEV_QUEUE) -> Queue:
    """Create (or find) the queue trigger buckets notify under `sluice dev`."""
    async with s3.client("sqs") as sqs:
        return await ensure_queue(sqs, name)


async def trigger_buckets(conn: Executor) -> list[str]:
    """Every bucket some s3 trigger names, enabled or not."""
    return [str(r["bucket"]) for r in await conn.fetch(Q["s3_trigger_buckets"])]


async def reconcile(conn: Executor, s3: Any, queue_arn: str, wired: set[str]) -> list[str]:
    """Wire every trigger bucket not in `wired` (creating it if needed); returns those wired.

    `wired` is updated in place; a bucket that fails is left out and retried next time.
    """
    done: list[str] = []
    for bucket in await trigger_buckets(conn):
        if bucket in wired:
            continue
        try:
            created = await wire_bucket(s3, bucket, queue_arn)
        except Exception as exc:
            log.warning("dev_bucket_failed", bucket=bucket, error=str(exc))
            continue
        wired.add(bucket)
        done.append(bucket)
        log.info("dev_bucket_wired", bucket=bucket, created=created, queue_arn=queue_arn)
    return done


async def run(
    database_url: str,
    s3_server: EmbeddedS3,
    stop: asyncio.Event,
    *,
    queue_arn: str,
    poll_s: float = 1.0,
) -> None:
    """Keep trigger buckets of `database_url` wired to `queue_arn` in `s3_server` until `stop`
    (see the module docstring)."""
    conn = await connect(database_url, application_name="sluice-dev-buckets")
    notified = asyncio.Event()

    def wake(*_: object) -> None:
        notified.set()

    try:
        await conn.add_listener(CHANNEL, wake)
        async with s3_server.client("s3") as s3:
            wired: set[str] = set()
            while not stop.is_set():
                try:
                    await reconcile(conn, s3, queue_arn, wired)
                except Exception as exc:  # the database went away for a moment
                    log.warning("dev_buckets_round_failed", error=str(exc))
                await wait_any(stop, notified, poll_s)
                # Forgetting buckets removed by hand makes the next round re-create them.
                wired = await _still_present(s3, wired)
    finally:
        await conn.close()


async def _still_present(s3: Any, wired: set[str]) -> set[str]:
    try:
        response = await s3.list_buckets()
    except Exception:
        return wired
    present = {b["Name"] for b in response.get("Buckets") or []}
    return wired & present
