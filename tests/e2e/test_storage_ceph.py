"""A real Ceph RADOS Gateway pushing bucket notifications to `/hooks/s3`.

Skipped, with the reason, where the Ceph binaries are not installed; CI installs them.
"""

from __future__ import annotations

import pytest

from services.dev.servers.ceph import EmbeddedCeph, notify_webhook
from tests.factories import add_trigger, add_workflow, s3_trigger, shell_node, workflow
from tests.support.s3 import (
    Pool,
    finished_instances,
    listener_settings,
    node_output,
    running_executor,
    running_listener,
    unique,
    wait_for_events,
)

pytestmark = pytest.mark.ceph
TOKEN = "ceph-webhook-token"
PRINT_KEY = (
    "python3 -c 'import json, os; "
    'print(json.load(open(os.environ["SLUICE_TRIGGER_MESSAGE_FILE"]))'
    '["data"]["s3"]["object"]["key"], end="")\''
)
KEYS = [
    "input/plain.csv",
    "input/with space.csv",
    "input/plus+sign.csv",
    "input/100% done.csv",
    "input/ünï cødé 文件.csv",
    "input/a%2Fb.csv",
]


async def bind_workflow(pool: Pool, bucket: str) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("ceph_files", bucket, key_pattern="input/*"))
        await add_workflow(
            conn,
            workflow("print_key", trigger="ceph_files", nodes=[shell_node("key", code=PRINT_KEY)]),
        )


async def test_uploads_run_end_to_end_with_keys_decoded_exactly_once(
    pool: Pool, db_url: str, ceph_rgw: EmbeddedCeph
) -> None:
    bucket = unique("ceph")
    await bind_workflow(pool, bucket)
    settings = listener_settings(db_url, webhook_tokens=f"old-token,{TOKEN}")

    async with running_listener(settings) as listener, running_executor(settings):
        async with ceph_rgw.client("s3") as s3, ceph_rgw.client("sns") as sns:
            await s3.create_bucket(Bucket=bucket)
            # RGW cannot send an Authorization header: the token travels in the URL.
            await notify_webhook(s3, sns, bucket, f"{listener.url}/hooks/s3?token={TOKEN}")
            for key in KEYS:
                await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
            # A second upload of identical content: the same ETag, deduplicated.
            await s3.put_object(Bucket=bucket, Key=KEYS[0], Body=KEYS[0].encode())
        await wait_for_events(pool, len(KEYS) + 1)
        instances = await finished_instances(pool, len(KEYS))

    assert len(instances) == len(KEYS)
    printed = []
    for instance in instances:
        assert instance["state"] == "succeeded"
        message = instance["trigger_message"]
        assert message["data"]["eventSource"] == "ceph:s3"
        assert message["type"] == "s3:ObjectCreated:Put"
        assert message["subject"] == f"{bucket}/{message['data']['s3']['object']['key']}"
        printed.append(await node_output(pool, instance["id"], "key"))
    assert sorted(printed) == sorted(KEYS)
    outcomes = [r["outcome"] for r in await pool.fetch("SELECT outcome FROM event_outcomes")]
    assert sorted(outcomes) == ["admitted"] * len(KEYS) + ["duplicate"]


async def test_notifications_without_the_token_are_refused_and_not_recorded(
    pool: Pool, db_url: str, ceph_rgw: EmbeddedCeph
) -> None:
    bucket = unique("ceph")
    await bind_workflow(pool, bucket)
    settings = listener_settings(db_url, webhook_tokens=TOKEN)

    async with running_listener(settings) as listener:
        async with ceph_rgw.client("s3") as s3, ceph_rgw.client("sns") as sns:
            await s3.create_bucket(Bucket=bucket)
            await notify_webhook(s3, sns, bucket, f"{listener.url}/hooks/s3?token=wrong")
            await s3.put_object(Bucket=bucket, Key="input/a.csv", Body=b"x")
            # Re-pointed with the right token, the next upload gets through.
            await notify_webhook(s3, sns, bucket, f"{listener.url}/hooks/s3?token={TOKEN}")
            await s3.put_object(Bucket=bucket, Key="input/b.csv", Body=b"y")
        [event] = await wait_for_events(pool, 1)

    assert event["ref"].startswith(f"{bucket}/input/b.csv@")
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
