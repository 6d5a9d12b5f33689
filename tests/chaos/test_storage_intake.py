"""Storage intake under chaos: the webhook receiver killed while the store keeps retrying, and SQS
visibility timeouts expiring while messages are being admitted.

Real `sluice run storage-listener` processes, real PostgreSQL and a real S3+SQS endpoint (moto);
every object has its own key, and each scenario counts the instances per key.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.dev.servers.process import free_port
from services.dev.servers.s3 import EmbeddedS3
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.chaos import (
    Pool,
    alive,
    kill_hard,
    message_ids,
    poll,
    ready,
    s3_keys,
    service_process,
    settled_ids,
    summary,
    tally,
)
from tests.support.s3 import (
    NotifiedBucket,
    queue_depth,
)

ROOT = Path(__file__).resolve().parents[2]
MINIO_PUT = json.loads((ROOT / "tests" / "fixtures" / "s3" / "minio_put.json").read_text())
TOKEN = "chaos-token"
SETTLE_S = 90.0


def storage_env(db_url: str, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(
        SLUICE_DATABASE_URL=db_url,
        SLUICE_HOST="127.0.0.1",
        SLUICE_WEBHOOK_PORT=str(free_port()),
        SLUICE_METRICS_PORT=str(free_port()),
        SLUICE_WEBHOOK_TOKENS=TOKEN,
        SLUICE_LOG_FORMAT="json",
        SLUICE_DRAIN_TIMEOUT_S="3",
        SLUICE_STORAGE_SQS_WAIT_S="1",
    )
    env.update(values)
    return env


async def bind_bucket(pool: Pool, bucket: str) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket))
        await add_workflow(conn, workflow("wf", trigger="files"))


def minio_event(bucket: str, key: str) -> bytes:
    """A MinIO webhook notification of one new object (MinIO's documented body)."""
    body: dict[str, Any] = copy.deepcopy(MINIO_PUT)
    body["Key"] = f"{bucket}/{key}"
    obj = body["Records"][0]["s3"]["object"]
    obj.update(key=key, eTag=hashlib.md5(key.encode()).hexdigest(), sequencer=key[-5:])
    body["Records"][0]["s3"]["bucket"]["name"] = bucket
    return json.dumps(body).encode()


async def deliver_with_retries(client: httpx.AsyncClient, url: str, body: bytes) -> int:
    """What a store's webhook target does: resend until a 2xx, backing off, forever.

    Returns the number of attempts. A request whose answer was lost is sent again, so the
    receiver sees some events twice.
    """
    delay = 0.1
    attempts = 0
    while True:
        attempts += 1
        try:
            response = await client.post(
                url, content=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            if response.is_success:
                return attempts
        except httpx.TransportError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def count_instances(pool: Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM instances"))


async def until_instances(pool: Pool, at_least: int, timeout_s: float = 60) -> None:
    async def reached() -> bool | None:
        return True if await count_instances(pool) >= at_least else None

    await poll(reached, timeout_s=timeout_s, what=f"{at_least} instances")


@pytest.mark.timeout(240)
async def test_webhook_receiver_killed_while_the_store_retries(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    await bind_bucket(pool, "data")
    keys = [f"in/{m}.csv" for m in message_ids("webhook", 400)]
    env = storage_env(db_url)
    url = f"http://127.0.0.1:{env['SLUICE_WEBHOOK_PORT']}/hooks/s3"
    metrics_port = int(env["SLUICE_METRICS_PORT"])
    log = tmp_path / "listener.log"
    attempts: list[int] = []

    async def sender(share: list[str]) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            for key in share:
                attempts.append(await deliver_with_retries(client, url, minio_event("data", key)))
                await asyncio.sleep(0.02)  # a store sends as objects arrive, not all at once

    async with service_process("storage-listener", env, log) as proc:
        await poll(partial(_ready, metrics_port), timeout_s=60, what="storage listener ready")
        senders = asyncio.gather(*(sender(keys[i::4]) for i in range(4)))
        await until_instances(pool, 100)
        kill_hard(proc.pid)
        await proc.wait()
        await asyncio.sleep(5)  # the receiver stays down while the store retries
    async with service_process("storage-listener", env, log) as proc:
        restarted = time.monotonic()
        before = await count_instances(pool)
        await until_instances(pool, min(before + 1, len(keys)))
        recover_s = time.monotonic() - restarted
        await asyncio.wait_for(senders, SETTLE_S)
        found = await settled_ids(lambda: s3_keys(pool), keys, timeout_s=SETTLE_S)
        assert alive(proc.pid)
    result = tally(keys, found)
    summary("webhook-receiver-down", result, recover_s)
    assert max(attempts) > 1, "no event was retried: the receiver was never seen down"
    assert result.lost == [] and result.duplicated == {}


async def _ready(port: int) -> bool | None:
    return True if await ready(port) else None


@pytest.mark.timeout(240)
async def test_sqs_visibility_timeout_expiring_mid_admission(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
    sqs_client: Any,
    tmp_path: Path,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    await bind_bucket(pool, bucket)
    keys = [f"in/{m}.csv" for m in message_ids("sqs", 300)]

    def env() -> dict[str, str]:
        # A visibility timeout shorter than the freezes below: messages a listener holds
        # become visible again and go to the other listener while the first still has them.
        return storage_env(
            db_url,
            SLUICE_SQS_QUEUE_URLS=queue.url,
            SLUICE_STORAGE_SQS_VISIBILITY_TIMEOUT_S="1",
            **embedded_s3.environment(),
        )

    async def upload() -> None:
        for key in keys:
            await s3_client.put_object(Bucket=bucket, Key=key, Body=key.encode())
            await asyncio.sleep(0.02)

    first_env, second_env = env(), env()
    async with (
        service_process("storage-listener", first_env, tmp_path / "first.log") as first,
        service_process("storage-listener", second_env, tmp_path / "second.log") as second,
    ):
        for port in (int(first_env["SLUICE_METRICS_PORT"]), int(second_env["SLUICE_METRICS_PORT"])):
            await poll(partial(_ready, port), timeout_s=60, what="listeners ready")
        uploading = asyncio.create_task(upload())
        recover: list[float] = []
        for frozen, threshold in ((first, 50), (second, 120), (first, 190)):
            await until_instances(pool, threshold)
            os.kill(frozen.pid, signal.SIGSTOP)
            await asyncio.sleep(3)  # longer than the visibility timeout: the point of the test
            os.kill(frozen.pid, signal.SIGCONT)
            resumed = time.monotonic()
            before = await count_instances(pool)
            await until_instances(pool, min(before + 1, len(keys)))
            recover.append(time.monotonic() - resumed)
        await uploading
        found = await settled_ids(lambda: s3_keys(pool), keys, timeout_s=SETTLE_S)

        async def drained() -> bool | None:
            return True if await queue_depth(sqs_client, queue.url) == 0 else None

        await poll(drained, timeout_s=60, what="the queue drained")
        assert first.returncode is None and second.returncode is None
    result = tally(keys, found)
    summary("sqs-visibility-expired", result, max(recover))
    redelivered = await pool.fetchval(
        "SELECT count(*) FROM event_outcomes WHERE outcome = 'duplicate'"
    )
    # The count is part of the scenario's result: pytest -s shows it.
    print(f"chaos: sqs redeliveries absorbed as duplicates: {redelivered}")  # noqa: T201
    assert result.lost == [] and result.duplicated == {}
